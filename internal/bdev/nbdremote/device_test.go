package nbdremote

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"blockcache/internal/bdev"
	"blockcache/internal/nbdproto"
	"blockcache/internal/testutil"
)

func fastOptions() Options {
	o := DefaultOptions()
	o.ReconnectDelay = 20 * time.Millisecond
	o.FastIOFailTimeout = 3 * time.Second
	o.IOTimeout = 3 * time.Second
	return o
}

func openFake(t *testing.T, s *fakeServer, o Options) *Device {
	t.Helper()
	d, err := Open("remote0", s.uri(), uuid.Nil, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// TestConcurrentIO runs overlapping-free random IO from many goroutines,
// each on its own region, over simple and structured replies, and checks
// every read and the server's final contents against a model.
func TestConcurrentIO(t *testing.T) {
	for _, structured := range []bool{false, true} {
		t.Run(fmt.Sprintf("structured=%v", structured), func(t *testing.T) {
			s := newFakeServer(t, 1<<20)
			s.structured = structured
			o := fastOptions()
			o.Connections = 3
			d := openFake(t, s, o)
			if st := d.Status(); st.Connections != 3 || st.State != StateConnected {
				t.Fatalf("status %+v, want 3 connections, connected", st)
			}
			model := make([]byte, 1<<20)
			const workers = 8
			region := len(model) / workers
			var wg sync.WaitGroup
			errs := make(chan error, workers)
			for w := range workers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					rng := rand.New(rand.NewPCG(uint64(w), 1))
					base := w * region
					for range 200 {
						off := base + rng.IntN(region/512-16)*512
						n := (1 + rng.IntN(16)) * 512
						if rng.IntN(2) == 0 {
							p := bytes.Repeat([]byte{byte(rng.Uint32())}, n)
							if err := d.WriteAt(p, int64(off), rng.IntN(4) == 0); err != nil {
								errs <- err
								return
							}
							copy(model[off:], p)
						} else {
							p := make([]byte, n)
							if err := d.ReadAt(p, int64(off)); err != nil {
								errs <- err
								return
							}
							if !bytes.Equal(p, model[off:off+n]) {
								errs <- fmt.Errorf("read at %d: data differs from the model", off)
								return
							}
						}
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			if err := d.Flush(); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(s.contents(), model) {
				t.Fatal("server contents differ from the model")
			}
			s.mu.Lock()
			accepted := s.mu.accepted
			s.mu.Unlock()
			if accepted != 3 {
				t.Fatalf("server accepted %d connections, want 3", accepted)
			}
		})
	}
}

// TestReplayOrder drops the connection with overlapping writes and a flush
// in flight, unanswered, and a newer overlapping write submitted during the
// outage: after the reconnect the server must see the unknown writes
// again in their order, the flush after them, then the newer write.
func TestReplayOrder(t *testing.T) {
	for _, executed := range []bool{false, true} {
		t.Run(fmt.Sprintf("executed=%v", executed), func(t *testing.T) {
			s := newFakeServer(t, 64<<10)
			o := fastOptions()
			o.OnEvent = func(msg string, err error) { t.Logf("%s: %v", msg, err) }
			d := openFake(t, s, o)
			s.setHold(true)
			results := make(chan error, 8)
			submit := func(f func() error, held int) {
				go func() { results <- f() }()
				s.waitFor(func() bool { return len(s.mu.held) == held })
			}
			fill := func(v byte) []byte { return bytes.Repeat([]byte{v}, 4096) }
			submit(func() error { return d.WriteAt(fill(1), 0, false) }, 1)
			submit(func() error { return d.WriteAt(fill(2)[:2048], 1024, false) }, 2)
			submit(func() error { return d.Flush() }, 3)
			// The server may have executed them (their replies lost) or not.
			s.setRefuse(true)
			s.setHold(false)
			s.dropAll(executed)
			go func() { results <- d.WriteAt(fill(3)[:512], 1536, false) }()
			for {
				d.mu.Lock()
				n := len(d.mu.pending)
				d.mu.Unlock()
				if n == 4 {
					break
				}
				time.Sleep(time.Millisecond)
			}
			s.setRefuse(false)
			for range 4 {
				if err := <-results; err != nil {
					t.Fatal(err)
				}
			}
			want := make([]byte, 64<<10)
			copy(want, fill(1))
			copy(want[1024:], fill(2)[:2048])
			copy(want[1536:], fill(3)[:512])
			if got := s.contents(); !bytes.Equal(got, want) {
				t.Fatalf("server contents differ from the model at %d", testutil.FirstDiff(got, want))
			}
			log := s.log()
			tail := []string{"write@0=1", "write@1024=2", "flush", "write@1536=3"}
			if len(log) < 4 || !slices.Equal(log[len(log)-4:], tail) {
				t.Fatalf("server executed %v, want it to end with %v", log, tail)
			}
			waitState(t, d, StateConnected)
			if st := d.Status(); st.Reconnects != 1 {
				t.Fatalf("status %+v, want 1 reconnect, connected", st)
			}
		})
	}
}

// waitState waits up to 5 s for d to reach state.
func waitState(t *testing.T, d *Device, state State) {
	t.Helper()
	for end := time.Now().Add(5 * time.Second); d.Status().State != state; time.Sleep(time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("state %s, want %s", d.Status().State, state)
		}
	}
}

// TestNeverAnswers: a server that takes requests and never replies makes
// each IO time out, the connection drop and come back, and the IO fail
// with EIO after fast_io_fail_timeout; nothing hangs, Close returns.
func TestNeverAnswers(t *testing.T) {
	s := newFakeServer(t, 64<<10)
	o := fastOptions()
	o.IOTimeout = 100 * time.Millisecond
	o.FastIOFailTimeout = 300 * time.Millisecond
	d := openFake(t, s, o)
	s.mu.Lock()
	s.mu.silent = true
	s.mu.Unlock()
	start := time.Now()
	err := d.ReadAt(make([]byte, 512), 0)
	if !errors.Is(err, ErrDisconnected) || bdev.Errno(err) != syscall.EIO {
		t.Fatalf("read = %v, want ErrDisconnected (EIO)", err)
	}
	if el := time.Since(start); el > 3*time.Second {
		t.Fatalf("read failed after %v", el)
	}
	// New IO fails at once while the server stays silent past the limit.
	done := make(chan error, 1)
	go func() { done <- d.WriteAt(make([]byte, 512), 0, false) }()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("write to a silent server succeeded")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("write hangs")
	}
	closed := make(chan error, 1)
	go func() { closed <- d.Close() }()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close hangs")
	}
}

// TestCtrlrLoss: with the server gone, the device gives up after
// ctrlr_loss_timeout, calls OnLost, and fails IO with ErrLost.
func TestCtrlrLoss(t *testing.T) {
	s := newFakeServer(t, 64<<10)
	o := fastOptions()
	o.CtrlrLossTimeout = 300 * time.Millisecond
	o.FastIOFailTimeout = 100 * time.Millisecond
	lost := make(chan struct{})
	o.OnLost = func() { close(lost) }
	d := openFake(t, s, o)
	s.ln.Close()
	s.dropAll(false)
	err := d.ReadAt(make([]byte, 512), 0)
	if !errors.Is(err, ErrDisconnected) {
		t.Fatalf("read during the outage = %v, want ErrDisconnected", err)
	}
	select {
	case <-lost:
	case <-time.After(5 * time.Second):
		t.Fatal("OnLost not called")
	}
	if st := d.Status(); st.State != StateLost || st.LastError == "" {
		t.Fatalf("status %+v, want lost with a reason", st)
	}
	if err := d.ReadAt(make([]byte, 512), 0); !errors.Is(err, ErrLost) || !errors.Is(err, bdev.ErrClosed) {
		t.Fatalf("read after the loss = %v, want ErrLost", err)
	}
}

// TestServerErrors: an error chunk's errno and message reach the caller;
// the connection stays up.
func TestServerErrors(t *testing.T) {
	for _, structured := range []bool{false, true} {
		s := newFakeServer(t, 64<<10)
		s.structured = structured
		d := openFake(t, s, fastOptions())
		s.mu.Lock()
		s.mu.errAt = 4096
		s.mu.Unlock()
		err := d.ReadAt(make([]byte, 8192), 0)
		var se *ServerError
		if !errors.As(err, &se) || se.Errno != syscall.EIO || bdev.Errno(err) != syscall.EIO {
			t.Fatalf("structured=%v: read = %v, want a server EIO", structured, err)
		}
		if structured && se.Message != "injected" {
			t.Fatalf("message %q, want the server's", se.Message)
		}
		if err := d.ReadAt(make([]byte, 512), 0); err != nil {
			t.Fatalf("read after an error: %v", err)
		}
		if d.Status().Reconnects != 0 {
			t.Fatal("a server error dropped the connection")
		}
	}
}

// TestOpenErrors: an unknown export and an unreachable server fail Open at
// once with precise errors.
func TestOpenErrors(t *testing.T) {
	s := newFakeServer(t, 64<<10)
	u := s.uri()
	u.Export = "nope"
	_, err := Open("r", u, uuid.Nil, fastOptions())
	if !errors.Is(err, ErrExportRefused) || !bytes.Contains([]byte(err.Error()), []byte(`"nope"`)) {
		t.Fatalf("open of an unknown export = %v", err)
	}
	u = URI{Network: "tcp", Address: "127.0.0.1:1"}
	_, err = Open("r", u, uuid.Nil, fastOptions())
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("open of a closed port = %v, want ECONNREFUSED", err)
	}
}

// TestGeometry: the preferred block size becomes the device's; a
// nonsensical one is refused.
func TestGeometry(t *testing.T) {
	s := newFakeServer(t, 1<<20+100)
	s.blockSize = [3]uint32{1, 4096, 1 << 20}
	d := openFake(t, s, fastOptions())
	if in := d.Info(); in.BlockSize != 4096 || in.NumBlocks != 256 {
		t.Fatalf("info %+v, want 256 blocks of 4096", in)
	}
	s2 := newFakeServer(t, 1<<20)
	s2.blockSize = [3]uint32{3, 4096, 1 << 20}
	if _, err := Open("r", s2.uri(), uuid.Nil, fastOptions()); !errors.Is(err, ErrProtocol) {
		t.Fatalf("open with minimum block size 3 = %v, want ErrProtocol", err)
	}
}

// TestNoAllocations: steady-state reads and writes allocate nothing. The
// server is nbdkit, in its own process, so only the client's allocations
// count.
func TestNoAllocations(t *testing.T) {
	d := openNbdkit(t, "memory", "1M")
	p := make([]byte, 4096)
	for range 10 {
		d.WriteAt(p, 0, false)
	}
	allocs := testing.AllocsPerRun(200, func() {
		if err := d.WriteAt(p, 4096, false); err != nil {
			t.Fatal(err)
		}
		if err := d.ReadAt(p, 4096); err != nil {
			t.Fatal(err)
		}
	})
	if allocs > 0 {
		t.Fatalf("%v allocations per write+read", allocs)
	}
}

// TestAbilitiesFromFlags: without NBD_FLAG_SEND_FUA a FUA write is a write
// then a flush; without NBD_FLAG_SEND_FLUSH a flush sends nothing; without
// trim or write zeroes those fail with ErrNotSupported, sending nothing.
func TestAbilitiesFromFlags(t *testing.T) {
	s := newFakeServer(t, 64<<10)
	s.flags = nbdproto.TxHasFlags | nbdproto.TxSendFlush
	d := openFake(t, s, fastOptions())
	if err := d.WriteAt(bytes.Repeat([]byte{9}, 512), 0, true); err != nil {
		t.Fatal(err)
	}
	if log := s.log(); !slices.Equal(log, []string{"write@0=9", "flush"}) {
		t.Fatalf("a FUA write without SEND_FUA ran %v, want a write then a flush", log)
	}
	if !errors.Is(d.Discard(0, 512), bdev.ErrNotSupported) || !errors.Is(d.WriteZeroes(0, 512), bdev.ErrNotSupported) {
		t.Fatal("discard or write zeroes without the server's flag did not fail with ErrNotSupported")
	}
	if a := d.Info().Abilities; a.Discard || a.WriteZeroes {
		t.Fatal("abilities reported that the server lacks")
	}

	s2 := newFakeServer(t, 64<<10)
	s2.flags = nbdproto.TxHasFlags
	d2 := openFake(t, s2, fastOptions())
	if err := d2.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := d2.WriteAt(make([]byte, 512), 0, true); err != nil {
		t.Fatal(err)
	}
	if log := s2.log(); !slices.Equal(log, []string{"write@0=0"}) {
		t.Fatalf("without SEND_FLUSH the server saw %v, want the write alone", log)
	}
}

// TestExportNameFallback: a server without NBD_OPT_GO is entered with
// NBD_OPT_EXPORT_NAME; a name it refuses (it hangs up) is ErrExportRefused.
func TestExportNameFallback(t *testing.T) {
	s := newFakeServer(t, 64<<10)
	s.noGo = true
	d := openFake(t, s, fastOptions())
	if in := d.Info(); in.BlockSize != 512 || in.NumBlocks != 128 {
		t.Fatalf("info %+v", in)
	}
	if err := d.WriteAt(bytes.Repeat([]byte{4}, 512), 512, false); err != nil {
		t.Fatal(err)
	}
	if got := s.contents()[512]; got != 4 {
		t.Fatalf("server byte %d", got)
	}
	u := s.uri()
	u.Export = "nope"
	if _, err := Open("r", u, uuid.Nil, fastOptions()); !errors.Is(err, ErrExportRefused) {
		t.Fatalf("open of a refused name = %v, want ErrExportRefused", err)
	}
}
