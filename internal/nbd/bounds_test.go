package nbd

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"blockcache/internal/bdev/bdevtest"
	"blockcache/internal/nbd/nbdclient"
	"blockcache/internal/nbdproto"
)

// waitFor polls cond until it holds, failing the test after a while.
func waitFor(t *testing.T, what string, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, within)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// heapObjectBytes returns the bytes of live heap objects after a full GC.
func heapObjectBytes() int64 {
	runtime.GC()
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(s)
	return int64(s[0].Value.Uint64())
}

// readUntilClosed reads nc until the server closes it and returns the
// bytes read, or an error if it is still open at the deadline.
func readUntilClosed(nc net.Conn, deadline time.Time) (int, error) {
	nc.SetReadDeadline(deadline)
	buf := make([]byte, 4096)
	total := 0
	for {
		n, err := nc.Read(buf)
		total += n
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return total, errors.New("connection still open")
		}
		if err != nil {
			return total, nil
		}
	}
}

// dialGreeted connects and reads the server's greeting; it returns nil if
// the server closed the connection instead.
func dialGreeted(t *testing.T, network, addr string) net.Conn {
	t.Helper()
	nc, err := net.Dial(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	greeting := make([]byte, 18)
	if _, err := io.ReadFull(nc, greeting); err != nil {
		nc.Close()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("no greeting and no close from %s %s", network, addr)
		}
		return nil
	}
	nc.SetReadDeadline(time.Time{})
	t.Cleanup(func() { nc.Close() })
	return nc
}

func TestNewServerOptions(t *testing.T) {
	s, err := NewServer(nil, Options{})
	if err != nil {
		t.Fatal(err)
	}
	want := Options{MaxConnections: 1024, HandshakeTimeout: 30 * time.Second, PayloadTimeout: 30 * time.Second, MaxInflightBytes: 256 << 20}
	if s.opts != want || s.budget.limit != want.MaxInflightBytes {
		t.Fatalf("defaults: %+v, budget %d; want %+v", s.opts, s.budget.limit, want)
	}
	for _, tc := range []struct {
		o    Options
		want string
	}{
		{Options{MaxConnections: -1}, "max connections -1 is negative"},
		{Options{HandshakeTimeout: -time.Second}, "handshake timeout -1s is negative"},
		{Options{PayloadTimeout: -time.Second}, "payload timeout -1s is negative"},
		{Options{MaxInflightBytes: MaxRequestBytes - 1}, "max in-flight bytes 33554431 is less than the largest request, 33554432 bytes"},
		{Options{MaxInflightBytes: -1}, "max in-flight bytes -1"},
	} {
		_, err := NewServer(nil, tc.o)
		if !errors.Is(err, ErrInvalidOptions) || !errors.Is(err, syscall.EINVAL) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("NewServer(%+v): %v, want ErrInvalidOptions saying %q", tc.o, err, tc.want)
		}
	}
}

// Fifty clients send the header of a 32 MiB WRITE and then nothing. The
// budget lets four payloads be buffered at a time; each is dropped after
// the payload timeout, which lets the next four in, until all fifty
// connections are closed. Then the server holds no payload bytes, the
// heap is back where it started, and the memory is handed back to the OS.
func TestStalledWritePayloadsAreDropped(t *testing.T) {
	const (
		conns   = 50
		timeout = 300 * time.Millisecond
		limit   = 4 * MaxRequestBytes
	)
	var trims atomic.Int32
	ts := startServerOpts(t, Options{PayloadTimeout: timeout, MaxInflightBytes: limit},
		func(s *Server) { s.trim.free = func() { trims.Add(1); debug.FreeOSMemory() } },
		Export{Name: "disk", Device: bdevtest.NewMalloc(t, "m0", MaxRequestBytes/512)})
	ncs := make([]net.Conn, conns)
	for i := range ncs {
		ncs[i] = rawSession(t, ts)
	}
	heapBefore := heapObjectBytes()

	start := time.Now()
	for i, nc := range ncs {
		if _, err := nc.Write(requestBytes(uint16(nbdproto.CmdWrite), 0, uint64(i), 0, MaxRequestBytes)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the budget filling up", 5*time.Second, func() bool { return ts.BufferedBytes() == limit })

	type result struct {
		after time.Duration
		err   error
	}
	results := make(chan result, conns)
	for _, nc := range ncs {
		go func() {
			_, err := readUntilClosed(nc, start.Add(30*time.Second))
			results <- result{time.Since(start), err}
		}()
	}
	var last time.Duration
	for range conns {
		r := <-results
		if r.err != nil {
			t.Fatal(r.err)
		}
		if r.after < timeout {
			t.Errorf("a connection was closed after %v, before the payload timeout of %v", r.after, timeout)
		}
		if b := ts.BufferedBytes(); b > limit {
			t.Errorf("%d bytes buffered, over the budget of %d", b, limit)
		}
		last = max(last, r.after)
	}
	t.Logf("50 stalled 32 MiB writes dropped within %v (payload timeout %v, 4 at a time)", last.Round(time.Millisecond), timeout)
	if p := ts.budget.peak.Load(); p != limit {
		t.Errorf("peak of buffered bytes %d, want the budget, %d", p, limit)
	}
	waitFor(t, "buffered bytes back to 0", 5*time.Second, func() bool { return ts.BufferedBytes() == 0 })
	waitFor(t, "50 disconnects logged", 5*time.Second, func() bool {
		return len(ts.log.find("nbd disconnect", "WRITE payload not received within the payload timeout (300ms): 33554432-byte payload")) == conns
	})
	heapAfter := heapObjectBytes()
	t.Logf("heap objects: %d KiB before, %d KiB after", heapBefore>>10, heapAfter>>10)
	if heapAfter > heapBefore+4<<20 {
		t.Errorf("heap objects grew from %d to %d bytes", heapBefore, heapAfter)
	}
	waitFor(t, "memory handed back to the OS", 3*trimDelay, func() bool { return trims.Load() > 0 })

	c := ts.dial(t, nbdclient.Options{Export: "disk"})
	data := pattern(7, 1<<20)
	if err := c.WriteAt(data, 0, 0); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(data))
	if err := c.ReadAt(got, 0); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("after the stalled clients: read %v, equal %v", err, bytes.Equal(got, data))
	}
}

// A payload that arrives in pieces within the timeout is accepted; one cut
// short, and the payload of a rejected WRITE, are bounded by it too.
func TestPayloadTimeout(t *testing.T) {
	const timeout = 400 * time.Millisecond
	dev := bdevtest.NewMalloc(t, "m0", 4096)
	ts := startServerOpts(t, Options{PayloadTimeout: timeout}, nil, Export{Name: "disk", Device: dev})

	t.Run("slow but in time", func(t *testing.T) {
		nc := rawSession(t, ts)
		data := pattern(3, 64<<10)
		nc.Write(requestBytes(uint16(nbdproto.CmdWrite), 0, 1, 0, uint32(len(data))))
		nc.Write(data[:1000])
		time.Sleep(timeout / 2)
		nc.Write(data[1000:])
		readSimpleReplies(t, nc, 1, 0)
		if got := deviceBytes(t, dev, 0, len(data)); !bytes.Equal(got, data) {
			t.Fatal("the payload sent in two pieces was not written")
		}
	})
	for _, tc := range []struct {
		name string
		off  uint64 // past the end for a rejected WRITE
	}{
		{"stalled mid-payload", 0},
		{"rejected and stalled", 1 << 30},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nc := rawSession(t, ts)
			nc.Write(requestBytes(uint16(nbdproto.CmdWrite), 0, 1, tc.off, 1<<20))
			nc.Write(make([]byte, 1000))
			start := time.Now()
			n, err := readUntilClosed(nc, start.Add(10*time.Second))
			if err != nil {
				t.Fatal(err)
			}
			if d := time.Since(start); d < timeout*3/4 {
				t.Fatalf("closed after %v, before the payload timeout of %v", d, timeout)
			}
			if n != 0 {
				t.Fatalf("the server replied (%d bytes) to a request whose payload never came", n)
			}
		})
	}
}

// A client that connects and never finishes negotiating is disconnected
// after the handshake timeout, counted from accept.
func TestHandshakeTimeout(t *testing.T) {
	const timeout = 300 * time.Millisecond
	ts := startServerOpts(t, Options{HandshakeTimeout: timeout}, nil, Export{Name: "disk", Device: bdevtest.NewMalloc(t, "m0", 64)})
	silent := dialGreeted(t, "tcp", ts.tcpAddr)
	start := time.Now()
	haggling := ts.handshake(t, stdFlags) // greeted and answered
	if _, err := haggling.List(); err != nil {
		t.Fatal(err)
	}
	for _, nc := range []net.Conn{silent, haggling.Conn()} {
		if _, err := readUntilClosed(nc, time.Now().Add(10*time.Second)); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d < timeout*3/4 {
			t.Fatalf("closed after %v, before the handshake timeout of %v", d, timeout)
		}
	}
	waitFor(t, "2 disconnects logged", 5*time.Second, func() bool {
		return len(ts.log.find("nbd disconnect", "negotiation not finished within the handshake timeout of 300ms")) == 2
	})
	// A client that negotiates in time is served.
	c := ts.dial(t, nbdclient.Options{Export: "disk"})
	time.Sleep(timeout * 3 / 2)
	if err := c.ReadAt(make([]byte, 512), 0); err != nil {
		t.Fatalf("idle after negotiating: %v", err)
	}
}

// Connections beyond the cap, on any listener, are closed at once without
// a greeting; one refusal is logged for a burst; a closed connection frees
// its slot.
func TestConnectionCap(t *testing.T) {
	const limit = 6
	ts := startServerOpts(t, Options{MaxConnections: limit}, nil, Export{Name: "disk", Device: bdevtest.NewMalloc(t, "m0", 64)})
	addr := func(i int) (string, string) {
		if i%2 == 1 {
			return "unix", ts.unixPath
		}
		return "tcp", ts.tcpAddr
	}
	var held []net.Conn
	for i := range limit {
		network, a := addr(i)
		nc := dialGreeted(t, network, a)
		if nc == nil {
			t.Fatalf("connection %d of %d refused", i+1, limit)
		}
		held = append(held, nc)
	}
	for i := range 5 {
		network, a := addr(i)
		nc, err := net.Dial(network, a)
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		n, err := readUntilClosed(nc, start.Add(5*time.Second))
		nc.Close()
		if err != nil || n != 0 {
			t.Fatalf("connection over the cap on %s: %d bytes read, %v", network, n, err)
		}
		if d := time.Since(start); d > time.Second {
			t.Fatalf("connection over the cap closed after %v", d)
		}
	}
	if got := ts.log.find("nbd connection refused", "at the connection cap of 6 connections"); len(got) != 1 {
		t.Fatalf("refusals logged: %q, want one line for the burst", got)
	}
	// Connections in transmission count as well, and a slot freed is
	// usable again.
	held[0].Close()
	var c *nbdclient.Client
	waitFor(t, "a freed slot", 5*time.Second, func() bool {
		var err error
		c, err = nbdclient.Dial("tcp", ts.tcpAddr, nbdclient.Options{Export: "disk"})
		return err == nil
	})
	defer c.Close()
	if nc := dialGreeted(t, "tcp", ts.tcpAddr); nc != nil {
		t.Fatal("a connection over the cap was greeted while one is in transmission")
	}
	if err := c.ReadAt(make([]byte, 512), 0); err != nil {
		t.Fatal(err)
	}
}

// Connections are refused while the process's open descriptors come within
// the reserve of the limit, and admitted again once some are closed.
func TestFDReserveRefusesConnections(t *testing.T) {
	const room = 16 // descriptors above the reserve; each connection takes 2 in this process
	var base atomic.Int64
	ts := startServerOpts(t, Options{}, func(s *Server) {
		s.fds.limit = func() (int, error) { return int(base.Load()) + fdReserve + room, nil }
	}, Export{Name: "disk", Device: bdevtest.NewMalloc(t, "m0", 64)})
	open, err := openFDs()
	if err != nil {
		t.Fatal(err)
	}
	base.Store(int64(open))

	var admitted []net.Conn
	for dialed := 0; ; dialed++ {
		if dialed > room {
			t.Fatalf("%d connections admitted with room for %d descriptors", len(admitted), room)
		}
		nc := dialGreeted(t, "tcp", ts.tcpAddr)
		if nc == nil {
			break
		}
		admitted = append(admitted, nc)
	}
	if len(admitted) < room/2-2 {
		t.Fatalf("only %d connections admitted with room for %d descriptors", len(admitted), room)
	}
	if nc := dialGreeted(t, "tcp", ts.tcpAddr); nc != nil {
		t.Fatal("a connection was admitted within the reserve")
	}
	if got := ts.log.find("nbd connection refused", "file descriptors nearly exhausted", "kept in reserve"); len(got) != 1 {
		t.Fatalf("refusals logged: %q", got)
	}
	for _, nc := range admitted {
		nc.Close()
	}
	waitFor(t, "admitted again", 5*time.Second, func() bool {
		nc := dialGreeted(t, "tcp", ts.tcpAddr)
		return nc != nil
	})
}

// The guard estimates between counts while far from the limit, counts
// often near it, and keeps the reserve free.
func TestFDGuard(t *testing.T) {
	open, counts := 100, 0
	var countErr error
	g := &fdGuard{
		reserve: 64,
		limit:   func() (int, error) { return 1000, nil },
		count:   func() (int, error) { counts++; return open, countErr },
	}
	t0 := time.Unix(1000, 0)
	at := func(d time.Duration) error { return g.admit(t0.Add(d)) }
	for i := range 100 {
		if err := at(time.Duration(i) * time.Millisecond); err != nil {
			t.Fatal(err)
		}
	}
	if counts != 1 {
		t.Fatalf("%d counts for 100 admissions within a second far from the limit, want 1", counts)
	}
	open = 900
	if err := at(time.Second); err != nil || counts != 2 {
		t.Fatalf("a second later: %v, %d counts, want a second count", err, counts)
	}
	if err := at(time.Second + time.Millisecond); err != nil || counts != 2 {
		t.Fatalf("1 ms later: %v, %d counts, want the estimate", err, counts)
	}
	open = 937 // 63 free: one short of the reserve
	err := at(time.Second + 20*time.Millisecond)
	if counts != 3 || !errors.Is(err, errFDReserve) || !strings.Contains(err.Error(), "937 of 1000 open (RLIMIT_NOFILE), 64 kept in reserve") {
		t.Fatalf("near the limit: %v after %d counts", err, counts)
	}
	open = 936
	if err := at(time.Second + 40*time.Millisecond); err != nil {
		t.Fatalf("with exactly the reserve free: %v", err)
	}
	// The estimate counts admissions: 936+1 leaves 63 free.
	if err := at(time.Second + 41*time.Millisecond); !errors.Is(err, errFDReserve) {
		t.Fatalf("estimate past the reserve: %v", err)
	}
	countErr = errors.New("no /proc")
	if err := at(2 * time.Second); err != nil {
		t.Fatalf("a count that fails must admit (the connection cap still holds): %v", err)
	}
}

// Many clients writing and reading 1 MiB at once against a device that
// holds every request: the server buffers exactly the budget, no more,
// and everything completes once the device lets go.
func TestBudgetHoldsAcrossConnections(t *testing.T) {
	const (
		clients = 8
		each    = 12 // requests per client, half writes
		size    = 1 << 20
		limit   = MaxRequestBytes
	)
	release := make(chan struct{})
	m := bdevtest.NewMalloc(t, "m0", clients*each*size/512)
	dev := &hookDevice{Device: m}
	dev.hook = func(string, int64, int64) error { <-release; return nil }
	ts := startServerOpts(t, Options{MaxInflightBytes: limit}, nil, Export{Name: "disk", Device: dev})

	var wg sync.WaitGroup
	errs := make(chan error, clients*each)
	for c := range clients {
		cl := ts.dial(t, nbdclient.Options{Export: "disk"})
		for r := range each {
			off := uint64((c*each + r) * size)
			wg.Go(func() {
				if r%2 == 0 {
					errs <- cl.WriteAt(pattern(off, size), off, 0)
				} else {
					errs <- cl.ReadAt(make([]byte, size), off)
				}
			})
		}
	}
	waitFor(t, "the budget filling up", 10*time.Second, func() bool { return ts.BufferedBytes() == limit })
	time.Sleep(100 * time.Millisecond) // give the server a chance to overshoot
	if b, in := ts.BufferedBytes(), dev.inflight.Load(); b != limit || in != limit/size {
		t.Fatalf("%d bytes buffered, %d requests in the device; want %d and %d", b, in, limit, limit/size)
	}
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if p := ts.budget.peak.Load(); p != limit {
		t.Fatalf("peak %d bytes buffered, want the budget, %d", p, limit)
	}
	waitFor(t, "buffered bytes back to 0", 5*time.Second, func() bool { return ts.BufferedBytes() == 0 })
	for c := range clients {
		for r := 0; r < each; r += 2 {
			off := (c*each + r) * size
			if !bytes.Equal(deviceBytes(t, m, int64(off), size), pattern(uint64(off), size)) {
				t.Fatalf("write at %d lost", off)
			}
		}
	}
}

// Removing an export ends its connections' waits for the budget, even
// while another export's requests hold all of it.
func TestRemoveExportEndsBudgetWait(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	slow := &hookDevice{Device: bdevtest.NewMalloc(t, "ma", MaxRequestBytes/512)}
	slow.hook = func(string, int64, int64) error { <-release; return nil }
	ts := startServerOpts(t, Options{MaxInflightBytes: MaxRequestBytes}, nil,
		Export{Name: "a", Device: slow}, Export{Name: "b", Device: bdevtest.NewMalloc(t, "mb", 64)})
	a := ts.dial(t, nbdclient.Options{Export: "a"})
	go a.ReadAt(make([]byte, MaxRequestBytes), 0) // holds the whole budget
	waitFor(t, "the budget taken", 5*time.Second, func() bool { return slow.inflight.Load() == 1 })
	b := ts.dial(t, nbdclient.Options{Export: "b"})
	berr := make(chan error, 1)
	go func() { berr <- b.ReadAt(make([]byte, 512), 0) }()
	waitFor(t, "a waiter", 5*time.Second, func() bool { return ts.budget.waiting.Load() == 1 })

	removed := make(chan error, 1)
	go func() { removed <- ts.RemoveExport("b") }()
	select {
	case err := <-removed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("RemoveExport waits for a request that waits for the budget")
	}
	if err := <-berr; !errors.Is(err, nbdclient.ErrClosed) {
		t.Fatalf("request waiting for the budget: %v, want the connection closed", err)
	}
	if ts.budget.waiting.Load() != 0 || ts.BufferedBytes() != MaxRequestBytes {
		t.Fatalf("after the wait ended: %d waiting, %d bytes", ts.budget.waiting.Load(), ts.BufferedBytes())
	}
}

// Waiters are served in arrival order (a small request does not pass a
// large one that waits), and a cancelled waiter lets those behind it in.
func TestBudgetOrder(t *testing.T) {
	b := newBudget(100)
	if !b.acquire(60, nil) {
		t.Fatal("first acquire")
	}
	cancelBig := make(chan struct{})
	big := make(chan bool, 1)
	go func() { big <- b.acquire(50, cancelBig) }()
	waitFor(t, "the large waiter", time.Second, func() bool { return b.waiting.Load() == 1 })
	small := make(chan bool, 1)
	go func() { small <- b.acquire(10, nil) }()
	waitFor(t, "the small waiter", time.Second, func() bool { return b.waiting.Load() == 2 })
	if b.tryAcquire(1) {
		t.Fatal("tryAcquire passed the waiters")
	}
	select {
	case <-small:
		t.Fatal("a small request passed a large one waiting before it")
	case <-time.After(50 * time.Millisecond):
	}
	close(cancelBig)
	if <-big {
		t.Fatal("a cancelled acquire reports success")
	}
	if !<-small {
		t.Fatal("small acquire")
	}
	if left := b.release(60); left != 10 {
		t.Fatalf("release left %d granted, want 10", left)
	}
	if left := b.release(10); left != 0 || b.peak.Load() != 70 {
		t.Fatalf("left %d, peak %d; want 0 and 70", left, b.peak.Load())
	}
}

// The pool keeps at most maxPooledClassBytes per class and maxPooledBytes
// in all, reuses what it keeps, and counts what it lets go.
func TestBufferPoolIsBounded(t *testing.T) {
	var p bufferPool
	var bufs []*[]byte
	for _, n := range []int{4096, 64 << 10, 1 << 20, 8 << 20, 16 << 20, MaxRequestBytes} {
		for range 2 * maxPooledClassBytes / n {
			bufs = append(bufs, p.get(n))
		}
		bufs = append(bufs, p.get(n))
	}
	var total int64
	for _, b := range bufs {
		total += int64(cap(*b))
		p.put(b)
	}
	for i := range p.classes {
		k := &p.classes[i]
		if n := len(k.free) << (i + minBufShift); n > maxPooledClassBytes {
			t.Errorf("class %d KiB keeps %d bytes", 1<<(i+minBufShift-10), n)
		}
	}
	pooled := p.pooled.Load()
	if pooled > maxPooledBytes || pooled < maxPooledBytes-8<<20 {
		t.Fatalf("pool keeps %d bytes, want at most %d and close to it", pooled, maxPooledBytes)
	}
	if d := p.takeDropped(); d != total-pooled || p.takeDropped() != 0 {
		t.Fatalf("dropped %d bytes, want %d", d, total-pooled)
	}
	free := p.classes[classOf(64<<10)].free
	if last := free[len(free)-1]; p.get(64<<10) != last {
		t.Fatal("a kept buffer was not reused")
	}
	if got := p.get(MaxRequestBytes); len(*got) != MaxRequestBytes {
		t.Fatalf("get after the pool is full: %d bytes", len(*got))
	}
}
