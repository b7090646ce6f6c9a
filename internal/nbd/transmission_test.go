package nbd

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"blockcache/internal/bdev"
	"blockcache/internal/bdev/bdevtest"
	"blockcache/internal/nbd/nbdclient"
)

// modes runs f with simple and with structured replies.
func modes(t *testing.T, f func(t *testing.T, o nbdclient.Options)) {
	for _, structured := range []bool{false, true} {
		t.Run(fmt.Sprintf("structured=%v", structured), func(t *testing.T) {
			f(t, nbdclient.Options{Export: "disk", StructuredReplies: structured})
		})
	}
}

// wantErrno fails unless err is a server error carrying errno.
func wantErrno(t *testing.T, what string, err error, errno syscall.Errno) {
	t.Helper()
	var e *nbdclient.Error
	if !errors.As(err, &e) || !errors.Is(err, errno) {
		t.Fatalf("%s: got %v, want server error %v", what, err, errno)
	}
}

// pattern returns n pseudo-random bytes determined by seed.
func pattern(seed uint64, n int) []byte {
	var s [32]byte
	binary.LittleEndian.PutUint64(s[:], seed)
	b := make([]byte, n)
	rand.NewChaCha8(s).Read(b)
	return b
}

func TestReadWriteRoundTrip(t *testing.T) {
	modes(t, func(t *testing.T, o nbdclient.Options) {
		dev := &hookDevice{Device: bdevtest.NewMalloc(t, "m0", 4096)}
		ts := startServer(t, Export{Name: "disk", Device: dev})
		c := ts.dial(t, o)
		want := pattern(1, 64<<10)
		if err := c.WriteAt(want, 4096, nbdclient.CmdFlagFUA); err != nil {
			t.Fatal(err)
		}
		if err := c.WriteAt(want[:512], 0, 0); err != nil {
			t.Fatal(err)
		}
		if n, fua := dev.writes.Load(), dev.fuaWrites.Load(); n != 2 || fua != 1 {
			t.Fatalf("device saw %d writes, %d with FUA; want 2, 1", n, fua)
		}
		r, err := c.Do(nbdclient.Request{Type: nbdclient.CmdRead, Offset: 4096, Length: 64 << 10})
		if err != nil || r.Err != nil {
			t.Fatal(err, r.Err)
		}
		if !bytes.Equal(r.Data, want) {
			t.Fatal("read back different data")
		}
		wantChunks := 0
		if o.StructuredReplies {
			wantChunks = 1 // one OFFSET_DATA chunk flagged DONE
		}
		if r.Chunks != wantChunks {
			t.Fatalf("%d chunks, want %d", r.Chunks, wantChunks)
		}
		// Device contents match, seen from below the server.
		got := make([]byte, len(want))
		if err := dev.ReadAt(got, 4096); err != nil || !bytes.Equal(got, want) {
			t.Fatal("device does not hold the written data")
		}
		// DF is valid only with structured replies; FUA is accepted on any
		// command once advertised.
		r, _ = c.Do(nbdclient.Request{Type: nbdclient.CmdRead, Flags: nbdclient.CmdFlagDF | nbdclient.CmdFlagFUA, Length: 512})
		if o.StructuredReplies && (r.Err != nil || !bytes.Equal(r.Data, want[:512])) {
			t.Fatalf("DF read: %v", r.Err)
		}
		if !o.StructuredReplies {
			wantErrno(t, "DF read without structured replies", r.Err, syscall.EINVAL)
		}
		if err := c.Flush(); err != nil {
			t.Fatal(err)
		}
		if err := c.Disconnect(); err != nil {
			t.Fatal(err)
		}
	})
}

// A request that blocks in the device must not hold up the replies of
// requests sent after it.
func TestOutOfOrderReplies(t *testing.T) {
	modes(t, func(t *testing.T, o nbdclient.Options) {
		dev, release := blockingDevice(t, "m0", 4096, "read", 0)
		ts := startServer(t, Export{Name: "disk", Device: dev})
		c := ts.dial(t, o)

		first := make(chan error, 1)
		go func() { first <- c.ReadAt(make([]byte, 512), 0) }()
		for dev.inflight.Load() == 0 {
			time.Sleep(time.Millisecond)
		}
		const n = 100
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for i := range n {
			wg.Go(func() {
				off := uint64(1+i) * 4096
				p := pattern(uint64(i), 4096)
				if err := c.WriteAt(p, off, 0); err != nil {
					errs <- err
					return
				}
				got := make([]byte, 4096)
				if err := c.ReadAt(got, off); err != nil {
					errs <- err
				} else if !bytes.Equal(got, p) {
					errs <- fmt.Errorf("block %d read back wrong", i)
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		select {
		case err := <-first:
			t.Fatalf("blocked read finished early: %v", err)
		default:
		}
		close(release)
		if err := <-first; err != nil {
			t.Fatal(err)
		}
		order := c.ReplyOrder()
		if len(order) != 2*n+1 || order[len(order)-1] != 1 {
			t.Fatalf("reply order %v: want handle 1 last of %d", order, 2*n+1)
		}
	})
}

// The server holds at most maxInflightRequests requests of one connection;
// the rest wait in the socket and are served later.
func TestInflightIsBounded(t *testing.T) {
	release := make(chan struct{})
	dev := &hookDevice{Device: bdevtest.NewMalloc(t, "m0", 4096)}
	dev.hook = func(string, int64, int64) error { <-release; return nil }
	ts := startServer(t, Export{Name: "disk", Device: dev})
	c := ts.dial(t, nbdclient.Options{Export: "disk"})

	const n = maxInflightRequests + 72
	errs := make(chan error, n)
	for i := range n {
		go func() { errs <- c.ReadAt(make([]byte, 512), uint64(i%4096)*512) }()
	}
	deadline := time.Now().Add(5 * time.Second)
	for dev.inflight.Load() < maxInflightRequests && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond) // give the server a chance to overshoot
	if got := dev.maxInflight.Load(); got != maxInflightRequests {
		t.Fatalf("%d requests in the device at once, want exactly %d", got, maxInflightRequests)
	}
	close(release)
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

func TestBadMagicDisconnects(t *testing.T) {
	ts := startServer(t, Export{Name: "disk", Device: bdevtest.NewMalloc(t, "m0", 64)})
	c := ts.dial(t, nbdclient.Options{Export: "disk"})
	if err := c.ReadAt(make([]byte, 512), 0); err != nil {
		t.Fatal(err)
	}
	bad := requestBytes(0, 0, 1, 0, 512)
	bad[0] ^= 0xff
	if err := c.SendRaw(bad); err != nil {
		t.Fatal(err)
	}
	waitDone(t, c)
	// The server itself is fine.
	c2 := ts.dial(t, nbdclient.Options{Export: "disk"})
	if err := c2.ReadAt(make([]byte, 512), 0); err != nil {
		t.Fatal(err)
	}
}

// Rejected requests are answered with the right errno, a rejected WRITE's
// payload is consumed, and the connection keeps working.
func TestRejectedRequestsKeepConnection(t *testing.T) {
	modes(t, func(t *testing.T, o nbdclient.Options) {
		const size = 4096 * 512
		plain := &hookDevice{Device: bdevtest.NewMalloc(t, "plain", 4096)}
		ts := startServer(t,
			Export{Name: "disk", Device: bdevtest.NewMalloc(t, "m0", 4096)},
			Export{Name: "ro", Device: bdevtest.NewMalloc(t, "m1", 4096), ReadOnly: true},
			Export{Name: "plain", Device: plain},
		)
		rw := ts.dial(t, o)
		o.Export = "ro"
		ro := ts.dial(t, o)
		o.Export = "plain"
		pl := ts.dial(t, o)
		w := func(off uint64, n int) nbdclient.Request {
			return nbdclient.Request{Type: nbdclient.CmdWrite, Offset: off, Length: uint32(n), Payload: pattern(off, n)}
		}
		for _, tc := range []struct {
			name string
			c    *nbdclient.Client
			req  nbdclient.Request
			want syscall.Errno
		}{
			{"misaligned read offset", rw, nbdclient.Request{Type: nbdclient.CmdRead, Offset: 100, Length: 512}, syscall.EINVAL},
			{"misaligned read length", rw, nbdclient.Request{Type: nbdclient.CmdRead, Length: 100}, syscall.EINVAL},
			{"misaligned write", rw, w(0, 700), syscall.EINVAL},
			{"zero-length read", rw, nbdclient.Request{Type: nbdclient.CmdRead}, syscall.EINVAL},
			{"read past end", rw, nbdclient.Request{Type: nbdclient.CmdRead, Offset: size - 512, Length: 1024}, syscall.EINVAL},
			{"read at wrapping offset", rw, nbdclient.Request{Type: nbdclient.CmdRead, Offset: 1<<64 - 512, Length: 1024}, syscall.EINVAL},
			{"write past end", rw, w(size-512, 1024), syscall.ENOSPC},
			{"write starting past end", rw, w(size, 512), syscall.ENOSPC},
			{"trim past end", rw, nbdclient.Request{Type: nbdclient.CmdTrim, Offset: size, Length: 512}, syscall.ENOSPC},
			{"zeroes past end", rw, nbdclient.Request{Type: nbdclient.CmdWriteZeroes, Offset: 0, Length: size + 512}, syscall.ENOSPC},
			{"oversized read", rw, nbdclient.Request{Type: nbdclient.CmdRead, Length: 32<<20 + 512}, syscall.EOVERFLOW},
			{"oversized write", rw, w(0, 32<<20+512), syscall.EOVERFLOW},
			{"unknown command", rw, nbdclient.Request{Type: 99, Length: 512}, syscall.EINVAL},
			{"block status unnegotiated", rw, nbdclient.Request{Type: nbdclient.CmdBlockStatus, Length: 512}, syscall.EINVAL},
			{"cache", rw, nbdclient.Request{Type: nbdclient.CmdCache, Length: 512}, syscall.EINVAL},
			{"NO_HOLE on write", rw, nbdclient.Request{Type: nbdclient.CmdWrite, Flags: nbdclient.CmdFlagNoHole, Length: 512, Payload: make([]byte, 512)}, syscall.EINVAL},
			{"unknown flag", rw, nbdclient.Request{Type: nbdclient.CmdRead, Flags: 1 << 9, Length: 512}, syscall.EINVAL},
			{"flush with range", rw, nbdclient.Request{Type: nbdclient.CmdFlush, Length: 512}, syscall.EINVAL},
			{"write read-only", ro, w(0, 4096), syscall.EPERM},
			{"write read-only oversized", ro, w(0, 32<<20+4096), syscall.EPERM},
			{"trim read-only", ro, nbdclient.Request{Type: nbdclient.CmdTrim, Length: 512}, syscall.EPERM},
			{"zeroes read-only", ro, nbdclient.Request{Type: nbdclient.CmdWriteZeroes, Length: 512}, syscall.EPERM},
			{"FUA read on read-only", ro, nbdclient.Request{Type: nbdclient.CmdRead, Flags: nbdclient.CmdFlagFUA, Length: 512}, syscall.EINVAL},
			{"trim unadvertised", pl, nbdclient.Request{Type: nbdclient.CmdTrim, Length: 512}, syscall.EINVAL},
		} {
			r, err := tc.c.Do(tc.req)
			if err != nil {
				t.Fatalf("%s: connection failed: %v", tc.name, err)
			}
			wantErrno(t, tc.name, r.Err, tc.want)
			if o.StructuredReplies && r.Err.(*nbdclient.Error).Message == "" {
				t.Errorf("%s: structured error without a message", tc.name)
			}
			// The very next request on the same connection works.
			got := make([]byte, 512)
			if err := tc.c.ReadAt(got, 512); err != nil {
				t.Fatalf("after %s: %v", tc.name, err)
			}
		}
		// Nothing rejected reached the devices.
		if n := plain.writes.Load(); n != 0 {
			t.Fatalf("%d writes reached the device", n)
		}
		zero := make([]byte, 4096)
		got := make([]byte, 4096)
		if err := rw.ReadAt(got, 0); err != nil || !bytes.Equal(got, zero) {
			t.Fatal("a rejected write changed the device")
		}
	})
}

// A READ of exactly the maximum payload is served.
func TestMaximumPayload(t *testing.T) {
	dev := bdevtest.NewMalloc(t, "m0", (32<<20)/512)
	ts := startServer(t, Export{Name: "disk", Device: dev})
	c := ts.dial(t, nbdclient.Options{Export: "disk", StructuredReplies: true})
	want := pattern(7, 32<<20)
	if err := c.WriteAt(want, 0, 0); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(want))
	if err := c.ReadAt(got, 0); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("32 MiB read: %v", err)
	}
}

func TestTrimAndWriteZeroes(t *testing.T) {
	modes(t, func(t *testing.T, o nbdclient.Options) {
		const blocks = 16384 // 8 MiB
		withZeroes := zeroingDevice{&hookDevice{Device: bdevtest.NewMalloc(t, "m0", blocks)}}
		without := &hookDevice{Device: bdevtest.NewMalloc(t, "m1", blocks)}
		ts := startServer(t, Export{Name: "disk", Device: withZeroes}, Export{Name: "plain", Device: without})

		check := func(c *nbdclient.Client, off uint64, n int, want []byte) {
			t.Helper()
			got := make([]byte, n)
			if err := c.ReadAt(got, off); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("[%d,+%d) does not read back as expected", off, n)
			}
		}
		fill := func(c *nbdclient.Client, off uint64, n int) []byte {
			t.Helper()
			p := pattern(off, n)
			if err := c.WriteAt(p, off, 0); err != nil {
				t.Fatal(err)
			}
			return p
		}

		c := ts.dial(t, o)
		p := fill(c, 0, 64<<10)
		if err := c.Trim(4096, 8192, 0); err != nil {
			t.Fatal(err)
		}
		// malloc zeroes on discard; the neighbours are untouched.
		check(c, 0, 64<<10, cat(p[:4096], make([]byte, 8192), p[12288:]))
		p = fill(c, 0, 64<<10)
		flushes := withZeroes.flushes.Load()
		if err := c.WriteZeroes(512, 1024, nbdclient.CmdFlagNoHole|nbdclient.CmdFlagFUA); err != nil {
			t.Fatal(err)
		}
		check(c, 0, 64<<10, cat(p[:512], make([]byte, 1024), p[1536:]))
		if withZeroes.flushes.Load() != flushes+1 {
			t.Fatal("WRITE_ZEROES with FUA did not flush the device")
		}
		if withZeroes.writes.Load() != 2 {
			t.Fatalf("device WriteZeroes not used: %d writes", withZeroes.writes.Load())
		}

		// Without WriteZeroer the server writes zero buffers, with FUA on
		// each, across more than one buffer's worth.
		o.Export = "plain"
		c = ts.dial(t, o)
		p = fill(c, 0, 4<<20)
		writes := without.writes.Load()
		if err := c.WriteZeroes(4096, 3<<20, nbdclient.CmdFlagFUA); err != nil {
			t.Fatal(err)
		}
		check(c, 0, 4<<20, cat(p[:4096], make([]byte, 3<<20), p[4096+3<<20:]))
		if got := without.fuaWrites.Load(); got != without.writes.Load()-writes || got < 3 {
			t.Fatalf("fallback wrote %d buffers, %d with FUA", without.writes.Load()-writes, got)
		}
	})
}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// Device errors reach the client as the errno errnoFor picks, and the
// connection goes on.
func TestDeviceErrorsAreReported(t *testing.T) {
	modes(t, func(t *testing.T, o nbdclient.Options) {
		var failWith error
		var mu sync.Mutex
		dev := &hookDevice{Device: bdevtest.NewMalloc(t, "m0", 64)}
		dev.hook = func(op string, off, n int64) error {
			mu.Lock()
			defer mu.Unlock()
			if off == 4096 || op == "flush" {
				return failWith
			}
			return nil
		}
		ts := startServer(t, Export{Name: "disk", Device: dev})
		c := ts.dial(t, o)
		for _, tc := range []struct {
			err  error
			want syscall.Errno
		}{
			{errors.New("medium error"), syscall.EIO},
			{&bdev.IOError{Op: "write", Dev: "m0", Err: syscall.ENOSPC}, syscall.ENOSPC},
			{fmt.Errorf("wrapped: %w", bdev.ErrInvalidIO), syscall.EINVAL},
			{bdev.ErrClosed, syscall.ESHUTDOWN},
			{syscall.EROFS, syscall.EPERM},
			{syscall.ENOMEM, syscall.ENOMEM},
		} {
			mu.Lock()
			failWith = tc.err
			mu.Unlock()
			r, rerr := c.Do(nbdclient.Request{Type: nbdclient.CmdRead, Offset: 4096, Length: 512})
			if rerr != nil {
				t.Fatal(rerr)
			}
			wantErrno(t, fmt.Sprintf("read failing with %v", tc.err), r.Err, tc.want)
			wantErrno(t, fmt.Sprintf("write failing with %v", tc.err), c.WriteAt(make([]byte, 512), 4096, 0), tc.want)
			wantErrno(t, fmt.Sprintf("flush failing with %v", tc.err), c.Flush(), tc.want)
			if err := c.ReadAt(make([]byte, 512), 0); err != nil {
				t.Fatalf("after %v: %v", tc.err, err)
			}
		}
		mu.Lock()
		failWith = nil
		mu.Unlock()
	})
}

// NBD_CMD_DISC waits for the requests in flight to be answered.
func TestDisconnectAnswersInflight(t *testing.T) {
	dev, release := blockingDevice(t, "m0", 64, "write", -1)
	ts := startServer(t, Export{Name: "disk", Device: dev})
	c := ts.dial(t, nbdclient.Options{Export: "disk"})
	werr := make(chan error, 1)
	go func() { werr <- c.WriteAt(make([]byte, 512), 0, 0) }()
	for dev.inflight.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	disc := make(chan error, 1)
	go func() { disc <- c.Disconnect() }()
	time.Sleep(20 * time.Millisecond)
	select {
	case <-c.Done():
		t.Fatal("server closed the connection with a write in flight")
	default:
	}
	close(release)
	if err := <-werr; err != nil {
		t.Fatalf("in-flight write: %v", err)
	}
	if err := <-disc; err != nil {
		t.Fatal(err)
	}
}

// Clients vanishing mid-request leave no goroutines behind and do not
// disturb the server.
func TestClientHangupLeaksNothing(t *testing.T) {
	dev, release := blockingDevice(t, "m0", 4096, "", 0)
	ts := startServer(t, Export{Name: "disk", Device: dev})
	// Warm up: the listeners and one full session.
	c := ts.dial(t, nbdclient.Options{Export: "disk"})
	if err := c.Disconnect(); err != nil {
		t.Fatal(err)
	}
	waitConns(t, ts.Server, 0)
	base := runtime.NumGoroutine()

	// 1: hangs up with a read blocked in the device.
	c1 := ts.dial(t, nbdclient.Options{Export: "disk"})
	go c1.ReadAt(make([]byte, 512), 0)
	for dev.inflight.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	// 2: hangs up in the middle of a WRITE payload.
	c2 := ts.dial(t, nbdclient.Options{Export: "disk", StructuredReplies: true})
	c2.SendRaw(append(requestBytes(1, 0, 1, 4096, 65536), make([]byte, 1000)...))
	// 3: hangs up in the middle of a request header.
	c3 := ts.dial(t, nbdclient.Options{Export: "disk"})
	c3.SendRaw(requestBytes(0, 0, 1, 0, 512)[:10])
	// 4: hangs up during the handshake.
	n := ts.handshake(t, stdFlags)
	n.SendOption(nbdclient.OptGo, []byte{0, 0})
	// 5: with many requests queued behind the blocked one.
	c5 := ts.dial(t, nbdclient.Options{Export: "disk"})
	for range 300 {
		go c5.ReadAt(make([]byte, 512), 0)
	}
	time.Sleep(50 * time.Millisecond)
	for _, c := range []*nbdclient.Client{c1, c2, c3, c5} {
		c.Close()
	}
	n.Close()
	close(release)
	waitConns(t, ts.Server, 0)

	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > base && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := runtime.NumGoroutine(); got > base {
		buf := make([]byte, 1<<20)
		t.Fatalf("%d goroutines, %d before the clients came:\n%s", got, base, buf[:runtime.Stack(buf, true)])
	}
	c = ts.dial(t, nbdclient.Options{Export: "disk"})
	if err := c.ReadAt(make([]byte, 512), 512); err != nil {
		t.Fatal(err)
	}
}

// waitConns waits until the server has n open connections.
func waitConns(t *testing.T, s *Server, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		s.mu.Lock()
		got := len(s.mu.conns)
		s.mu.Unlock()
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d connections open, want %d", got, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A panic while serving a request closes that connection only.
func TestPanicClosesOnlyThatConnection(t *testing.T) {
	dev := &hookDevice{Device: bdevtest.NewMalloc(t, "m0", 64)}
	dev.hook = func(op string, off, n int64) error {
		if off == 8192 {
			panic(errors.New("device exploded"))
		}
		return nil
	}
	ts := startServer(t, Export{Name: "disk", Device: dev})
	ts.log.allowErrors.Store(true)
	c := ts.dial(t, nbdclient.Options{Export: "disk"})
	other := ts.dial(t, nbdclient.Options{Export: "disk"})
	if _, err := c.Do(nbdclient.Request{Type: nbdclient.CmdRead, Offset: 8192, Length: 512}); err == nil {
		t.Fatal("request that panicked got a reply")
	}
	waitDone(t, c)
	if ts.log.errorCount() != 1 {
		t.Fatalf("%d errors logged, want the panic", ts.log.errorCount())
	}
	if err := other.ReadAt(make([]byte, 512), 0); err != nil {
		t.Fatal(err)
	}
}
