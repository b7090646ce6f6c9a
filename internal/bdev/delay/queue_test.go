package delay_test

import (
	"errors"
	"sync"
	"testing"
	"time"

	"blockcache/internal/bdev"
	"blockcache/internal/bdev/bdevtest"
	"blockcache/internal/bdev/delay"
)

// arrivals is an inner device that records the offset of each read and
// write as it reaches it.
type arrivals struct {
	bdev.Device
	mu   sync.Mutex
	offs []int64
}

func (a *arrivals) record(off int64) {
	a.mu.Lock()
	a.offs = append(a.offs, off)
	a.mu.Unlock()
}

func (a *arrivals) ReadAt(p []byte, off int64) error {
	a.record(off)
	return a.Device.ReadAt(p, off)
}

func (a *arrivals) WriteAt(p []byte, off int64, fua bool) error {
	a.record(off)
	return a.Device.WriteAt(p, off, fua)
}

func (a *arrivals) seen() []int64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]int64(nil), a.offs...)
}

// heldSleep is a fake Sleep that holds every IO in its delay until the test
// lets one go, and records the most IOs it held at once.
type heldSleep struct {
	entered chan struct{} // one send per IO entering its delay
	release chan struct{} // one receive lets one held IO go
	mu      sync.Mutex
	held    int
	maxHeld int
}

func newHeldSleep() *heldSleep {
	return &heldSleep{entered: make(chan struct{}, 64), release: make(chan struct{})}
}

func (h *heldSleep) sleep(time.Duration) {
	h.mu.Lock()
	h.held++
	h.maxHeld = max(h.maxHeld, h.held)
	h.mu.Unlock()
	h.entered <- struct{}{}
	<-h.release
	h.mu.Lock()
	h.held--
	h.mu.Unlock()
}

func (h *heldSleep) max() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.maxHeld
}

// waitFor polls cond for up to 5 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestMaxInflightFIFO starts limit+k IOs against a device admitting limit
// at a time, every delay held: limit IOs reach the inner device and their
// delay, the k others wait without reaching it, and each slot let go admits
// the oldest waiter, so they reach the inner device in the order they came.
func TestMaxInflightFIFO(t *testing.T) {
	const limit, k = 4, 6
	in := &arrivals{Device: bdevtest.NewMalloc(t, "Malloc0", 64)}
	h := newHeldSleep()
	d, err := delay.New(in, delay.Config{Name: "Delay0", Latencies: testLatencies, Sleep: h.sleep, MaxInflight: limit})
	if err != nil {
		t.Fatal(err)
	}
	if d.MaxInflight() != limit {
		t.Fatalf("MaxInflight = %d, want %d", d.MaxInflight(), limit)
	}
	errs := make(chan error, limit+k)
	// io issues a read (even i) or a write (odd i) of sector i.
	io := func(i int) {
		p := make([]byte, 512)
		if i%2 == 0 {
			errs <- d.ReadAt(p, int64(i)*512)
		} else {
			errs <- d.WriteAt(p, int64(i)*512, false)
		}
	}
	for i := range limit {
		go io(i)
	}
	for range limit {
		<-h.entered
	}
	for i := limit; i < limit+k; i++ {
		go io(i)
		waitFor(t, "IO to queue", func() bool { _, w := d.Inflight(); return w == i-limit+1 })
	}
	if a, w := d.Inflight(); a != limit || w != k {
		t.Fatalf("Inflight = %d admitted, %d waiting; want %d, %d", a, w, limit, k)
	}
	if got := in.seen(); len(got) != limit {
		t.Fatalf("inner device saw %v before any slot was freed, want %d IOs", got, limit)
	}
	for i := limit; i < limit+k; i++ {
		h.release <- struct{}{}
		<-h.entered
		got := in.seen()
		if len(got) != i+1 || got[i] != int64(i)*512 {
			t.Fatalf("after %d slots freed the inner device saw %v, want sector %d last", i-limit+1, got, i)
		}
	}
	for range limit {
		h.release <- struct{}{}
	}
	for range limit + k {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if m := h.max(); m != limit {
		t.Fatalf("%d IOs were in their delay at once, want at most (and here exactly) %d", m, limit)
	}
	if a, w := d.Inflight(); a != 0 || w != 0 {
		t.Fatalf("Inflight after all returned = %d, %d", a, w)
	}
}

// TestMaxInflightRealClock checks the bound with the real clock: 8 reads
// of 20 ms, 2 at a time, take at least 4 rounds.
func TestMaxInflightRealClock(t *testing.T) {
	const lat, limit, n = 20 * time.Millisecond, 2, 8
	d, err := delay.New(bdevtest.NewMalloc(t, "Malloc0", 64), delay.Config{Name: "Delay0", Latencies: delay.Latencies{AvgRead: lat, P99Read: lat}, MaxInflight: limit})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	maxSeen := 0
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			select {
			case <-stop:
				return
			default:
			}
			a, _ := d.Inflight()
			maxSeen = max(maxSeen, a)
			time.Sleep(100 * time.Microsecond)
		}
	}()
	start := time.Now()
	for i := range n {
		wg.Go(func() {
			if err := d.ReadAt(make([]byte, 512), int64(i)*512); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	el := time.Since(start)
	close(stop)
	<-sampled
	if el < n/limit*lat {
		t.Fatalf("%d reads of %v, %d at a time, took %v, want at least %v", n, lat, limit, el, n/limit*lat)
	}
	if maxSeen > limit {
		t.Fatalf("%d IOs admitted at once, limit %d", maxSeen, limit)
	}
}

// TestMaxInflightAllKinds checks that flush, discard and write-zeroes take
// a slot too (they wait behind a held read), and that rejected IO takes none.
func TestMaxInflightAllKinds(t *testing.T) {
	h := newHeldSleep()
	d, err := delay.New(bdevtest.NewMalloc(t, "Malloc0", 64), delay.Config{Name: "Delay0", Latencies: testLatencies, Sleep: h.sleep, MaxInflight: 1})
	if err != nil {
		t.Fatal(err)
	}
	read := make(chan error, 1)
	go func() { read <- d.ReadAt(make([]byte, 512), 0) }()
	<-h.entered
	if err := d.ReadAt(make([]byte, 512), 1); !errors.Is(err, bdev.ErrInvalidIO) {
		t.Fatalf("misaligned read while the slot is held = %v, want ErrInvalidIO at once", err)
	}
	others := make(chan error, 3)
	go func() { others <- d.Flush() }()
	go func() { others <- d.Discard(0, 512) }()
	go func() { others <- d.WriteZeroes(512, 512) }()
	waitFor(t, "flush, discard and write-zeroes to queue", func() bool { _, w := d.Inflight(); return w == 3 })
	h.release <- struct{}{}
	if err := <-read; err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := <-others; err != nil {
			t.Fatal(err)
		}
	}
}

// TestMaxInflightClose closes the device while an IO waits for a slot: the
// waiter fails with ErrClosed once admitted, undelayed, and frees its slot.
func TestMaxInflightClose(t *testing.T) {
	h := newHeldSleep()
	d, err := delay.New(bdevtest.NewMalloc(t, "Malloc0", 64), delay.Config{Name: "Delay0", Latencies: testLatencies, Sleep: h.sleep, MaxInflight: 1})
	if err != nil {
		t.Fatal(err)
	}
	first := make(chan error, 1)
	go func() { first <- d.ReadAt(make([]byte, 512), 0) }()
	<-h.entered
	second := make(chan error, 1)
	go func() { second <- d.WriteAt(make([]byte, 512), 512, false) }()
	waitFor(t, "write to queue", func() bool { _, w := d.Inflight(); return w == 1 })
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	h.release <- struct{}{}
	if err := <-first; err != nil {
		t.Fatalf("read admitted before Close = %v", err)
	}
	if err := <-second; !errors.Is(err, bdev.ErrClosed) {
		t.Fatalf("write waiting at Close = %v, want ErrClosed", err)
	}
	if m := h.max(); m != 1 {
		t.Fatalf("%d IOs delayed at once, want 1 (the closed write is not delayed)", m)
	}
	if a, w := d.Inflight(); a != 0 || w != 0 {
		t.Fatalf("Inflight after Close = %d, %d", a, w)
	}
}

func TestMaxInflightConfig(t *testing.T) {
	m := bdevtest.NewMalloc(t, "Malloc0", 64)
	if _, err := delay.New(m, delay.Config{Name: "x", MaxInflight: -1}); err == nil {
		t.Fatal("New accepted a negative MaxInflight")
	}
	d := newDelay(t, m, &sleeps{})
	if d.MaxInflight() != 0 {
		t.Fatalf("MaxInflight without a limit = %d, want 0", d.MaxInflight())
	}
}

// TestConformanceLimited runs the device conformance suite with one IO at
// a time, which must not deadlock its concurrent cases.
func TestConformanceLimited(t *testing.T) {
	bdevtest.Run(t, func(t *testing.T) bdev.Device {
		d, err := delay.New(bdevtest.NewMalloc(t, "Malloc0", 64), delay.Config{Name: "Delay0", Latencies: testLatencies, Sleep: (&sleeps{}).sleep, MaxInflight: 1})
		if err != nil {
			t.Fatal(err)
		}
		return d
	})
}
