package nbdremote

import (
	"bytes"
	"errors"
	"syscall"
	"testing"
	"time"

	"blockcache/internal/bdev"
	"blockcache/internal/nbdproto"
)

// waitReconnects waits up to 5 s for d to have reconnected n times and be
// connected.
func waitReconnects(t *testing.T, d *Device, n uint64) {
	t.Helper()
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(time.Millisecond) {
		if st := d.Status(); st.Reconnects >= n && st.State == StateConnected {
			return
		}
	}
	t.Fatalf("status %+v, want %d reconnects, connected", d.Status(), n)
}

func isWritesLost(err error) bool {
	return errors.Is(err, ErrWritesLost) && bdev.Errno(err) == syscall.EIO
}

// TestFlushReportsLostWrites: a server with a volatile cache acknowledges
// a write and crashes before a flush; after the reconnect the first Flush
// fails with EIO, once; the caller writes the data again and the next
// Flush succeeds with the data durable.
func TestFlushReportsLostWrites(t *testing.T) {
	s := newFakeServer(t, 64<<10)
	s.volatile = true
	d := openFake(t, s, fastOptions())
	data := bytes.Repeat([]byte{7}, 8192)
	if err := d.WriteAt(data, 4096, false); err != nil {
		t.Fatal(err)
	}
	s.crash()
	waitReconnects(t, d, 1)
	if got := s.durableContents(); !bytes.Equal(got, make([]byte, len(got))) {
		t.Fatal("the crashed server kept an unflushed write: the test models nothing")
	}
	if err := d.Flush(); !isWritesLost(err) {
		t.Fatalf("flush after the lost session = %v, want ErrWritesLost (EIO)", err)
	}
	if err := d.WriteAt(data, 4096, false); err != nil {
		t.Fatal(err)
	}
	if err := d.Flush(); err != nil {
		t.Fatalf("flush after rewriting = %v, want success", err)
	}
	if got := s.durableContents(); !bytes.Equal(got[4096:4096+len(data)], data) {
		t.Fatal("rewritten data not durable after a successful flush")
	}
}

// TestConcurrentFlushesAllReportLoss: flushes in flight when the session
// is lost are resent and succeed on the server, but each fails to its
// caller; a Flush called after those failures returned succeeds.
func TestConcurrentFlushesAllReportLoss(t *testing.T) {
	s := newFakeServer(t, 64<<10)
	s.volatile = true
	d := openFake(t, s, fastOptions())
	if err := d.WriteAt(bytes.Repeat([]byte{1}, 4096), 0, false); err != nil {
		t.Fatal(err)
	}
	s.setHold(true)
	results := make(chan error, 2)
	for i := range 2 {
		go func() { results <- d.Flush() }()
		s.waitFor(func() bool { return len(s.mu.held) == i+1 })
	}
	s.setHold(false)
	s.crash()
	for range 2 {
		if err := <-results; !isWritesLost(err) {
			t.Fatalf("flush in flight at the loss = %v, want ErrWritesLost (EIO)", err)
		}
	}
	// The replayed flushes complete before the reconnect is counted.
	waitReconnects(t, d, 1)
	if n := d.Status().Reconnects; n != 1 {
		t.Fatalf("%d reconnects, want 1", n)
	}
	if err := d.Flush(); err != nil {
		t.Fatalf("flush after the loss was reported = %v, want success", err)
	}
}

// TestFlushNoLossReported: losing a session fails no Flush when nothing
// acknowledged could have been lost: a server without
// NBD_FLAG_SEND_FLUSH, writes with FUA, writes a flush already covered,
// and writes whose outcome was unknown and were resent on the new session.
func TestFlushNoLossReported(t *testing.T) {
	data := bytes.Repeat([]byte{9}, 4096)
	for _, tc := range []struct {
		name   string
		flags  nbdproto.TxFlags
		before func(t *testing.T, s *fakeServer, d *Device) chan error
	}{
		{name: "no-flush-flag", flags: nbdproto.TxHasFlags | nbdproto.TxSendTrim,
			before: func(t *testing.T, s *fakeServer, d *Device) chan error {
				return nil
			}},
		{name: "fua",
			before: func(t *testing.T, s *fakeServer, d *Device) chan error {
				if err := d.WriteAt(data, 0, true); err != nil {
					t.Fatal(err)
				}
				return nil
			}},
		{name: "flushed",
			before: func(t *testing.T, s *fakeServer, d *Device) chan error {
				if err := d.WriteAt(data, 0, false); err != nil {
					t.Fatal(err)
				}
				if err := d.Flush(); err != nil {
					t.Fatal(err)
				}
				return nil
			}},
		{name: "resent",
			before: func(t *testing.T, s *fakeServer, d *Device) chan error {
				s.setHold(true)
				done := make(chan error, 1)
				go func() { done <- d.WriteAt(data, 0, false) }()
				s.waitFor(func() bool { return len(s.mu.held) == 1 })
				s.setHold(false)
				return done
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newFakeServer(t, 64<<10)
			if tc.flags != 0 {
				s.flags = tc.flags
			} else {
				s.volatile = true
			}
			d := openFake(t, s, fastOptions())
			if tc.flags != 0 {
				// A server without a write cache: acknowledged is durable.
				if err := d.WriteAt(data, 0, false); err != nil {
					t.Fatal(err)
				}
			}
			done := tc.before(t, s, d)
			s.crash()
			if done != nil {
				if err := <-done; err != nil {
					t.Fatal(err)
				}
			}
			waitReconnects(t, d, 1)
			if err := d.Flush(); err != nil {
				t.Fatalf("flush after the reconnect = %v, want success", err)
			}
			if got := s.durableContents(); !bytes.Equal(got[:len(data)], data) {
				t.Fatal("data not durable after a successful flush")
			}
		})
	}
}

// TestFlushSinceKeepsItsOwnMark: a writer that took a mark before writes
// the crashed server acknowledged gets the loss from FlushSince even after
// Flush reported it to another caller; a mark taken after the loss was
// recorded does not fail.
func TestFlushSinceKeepsItsOwnMark(t *testing.T) {
	s := newFakeServer(t, 64<<10)
	s.volatile = true
	d := openFake(t, s, fastOptions())
	var _ bdev.LossReporter = d
	before := d.WriteBackMark()
	if err := d.WriteAt(bytes.Repeat([]byte{3}, 4096), 0, false); err != nil {
		t.Fatal(err)
	}
	s.crash()
	waitReconnects(t, d, 1)
	after := d.WriteBackMark()
	if err := d.Flush(); !isWritesLost(err) {
		t.Fatalf("flush = %v, want ErrWritesLost (EIO)", err)
	}
	for range 2 {
		if err := d.FlushSince(before); !isWritesLost(err) {
			t.Fatalf("FlushSince(mark before the loss) = %v, want ErrWritesLost (EIO)", err)
		}
	}
	if err := d.FlushSince(after); err != nil {
		t.Fatalf("FlushSince(mark after the loss) = %v, want success", err)
	}
	if err := d.Flush(); err != nil {
		t.Fatalf("flush after the loss was reported = %v, want success", err)
	}
}

// TestEmulatedFUAReportsLoss: without NBD_FLAG_SEND_FUA a FUA write is a
// write and a flush; the flush fails if the session is lost after the
// write was acknowledged, and it leaves Flush's report to Flush's callers.
func TestEmulatedFUAReportsLoss(t *testing.T) {
	s := newFakeServer(t, 64<<10)
	s.volatile = true
	s.flags &^= nbdproto.TxSendFUA
	d := openFake(t, s, fastOptions())
	if err := d.WriteAt(bytes.Repeat([]byte{4}, 4096), 0, false); err != nil {
		t.Fatal(err)
	}
	s.setHold(true)
	done := make(chan error, 1)
	go func() { done <- d.WriteAt(bytes.Repeat([]byte{5}, 4096), 8192, true) }()
	// The write is acknowledged; its flush is held, then the server crashes.
	s.waitFor(func() bool { return len(s.mu.held) == 1 })
	s.mu.Lock()
	r := s.mu.held[0]
	s.mu.held = nil
	out := s.executeLocked(r)
	s.mu.Unlock()
	s.reply(r, true, out)
	s.waitFor(func() bool { return len(s.mu.held) == 1 })
	s.setHold(false)
	s.crash()
	if err := <-done; !isWritesLost(err) {
		t.Fatalf("emulated FUA write across the crash = %v, want ErrWritesLost (EIO)", err)
	}
	if err := d.Flush(); !isWritesLost(err) {
		t.Fatalf("flush = %v, want ErrWritesLost (EIO): the FUA write's failure is its own", err)
	}
}
