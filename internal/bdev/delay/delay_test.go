package delay_test

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"blockcache/internal/bdev"
	"blockcache/internal/bdev/bdevtest"
	"blockcache/internal/bdev/delay"
)

// sleeps is a fake Sleep that records what it was asked to wait.
type sleeps struct {
	mu sync.Mutex
	d  []time.Duration
}

func (s *sleeps) sleep(d time.Duration) {
	s.mu.Lock()
	s.d = append(s.d, d)
	s.mu.Unlock()
}

func (s *sleeps) take() []time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.d
	s.d = nil
	return out
}

var testLatencies = delay.Latencies{
	AvgRead: 10 * time.Microsecond, P99Read: 500 * time.Microsecond,
	AvgWrite: 20 * time.Microsecond, P99Write: 900 * time.Microsecond,
}

func newDelay(t *testing.T, inner bdev.Device, s *sleeps) *delay.Device {
	t.Helper()
	d, err := delay.New(inner, delay.Config{Name: "Delay0", Latencies: testLatencies, Sleep: s.sleep, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestConformance(t *testing.T) {
	bdevtest.Run(t, func(t *testing.T) bdev.Device { return newDelay(t, bdevtest.NewMalloc(t, "Malloc0", 64), &sleeps{}) })
}

func TestNew(t *testing.T) {
	m := bdevtest.NewMalloc(t, "Malloc0", 64)
	id := uuid.New()
	d, err := delay.New(m, delay.Config{Name: "Delay0", UUID: id, Latencies: testLatencies})
	if err != nil {
		t.Fatal(err)
	}
	want := bdev.Info{Name: "Delay0", UUID: id, ProductName: "delay", BlockSize: 512, NumBlocks: 64, Abilities: m.Info().Abilities}
	if d.Info() != want {
		t.Fatalf("Info = %+v, want %+v", d.Info(), want)
	}
	if d.Inner() != bdev.Device(m) || d.Latencies() != testLatencies {
		t.Fatalf("Inner %v, Latencies %+v", d.Inner().Info().Name, d.Latencies())
	}
	bad := []struct {
		name string
		cfg  delay.Config
	}{
		{"empty name", delay.Config{}},
		{"p99 read below average", delay.Config{Name: "x", Latencies: delay.Latencies{AvgRead: 2, P99Read: 1}}},
		{"p99 write below average", delay.Config{Name: "x", Latencies: delay.Latencies{AvgWrite: 2, P99Write: 1}}},
		{"negative", delay.Config{Name: "x", Latencies: delay.Latencies{AvgRead: -1, P99Read: 0}}},
	}
	for _, tc := range bad {
		if _, err := delay.New(m, tc.cfg); err == nil {
			t.Errorf("%s: New succeeded", tc.name)
		}
	}
}

// TestLatencyDistribution checks which latency each kind of IO gets: about
// one read or write in a hundred the p99 one, the rest the average one, and
// no delay for flush, discard and write-zeroes.
func TestLatencyDistribution(t *testing.T) {
	var s sleeps
	d := newDelay(t, bdevtest.NewMalloc(t, "Malloc0", 64), &s)
	p := make([]byte, 512)
	const n = 20000
	for i := range n {
		if err := d.ReadAt(p, int64(i%64)*512); err != nil {
			t.Fatal(err)
		}
	}
	counts := map[time.Duration]int{}
	for _, v := range s.take() {
		counts[v]++
	}
	if len(counts) != 2 || counts[testLatencies.AvgRead]+counts[testLatencies.P99Read] != n {
		t.Fatalf("read sleeps %v: want only avg and p99 read latencies, %d in all", counts, n)
	}
	if p99 := counts[testLatencies.P99Read]; p99 < n/100/2 || p99 > n/100*2 {
		t.Fatalf("%d of %d reads got the p99 latency, want about 1%%", p99, n)
	}

	for range 300 {
		if err := d.WriteAt(p, 0, false); err != nil {
			t.Fatal(err)
		}
	}
	for _, v := range s.take() {
		if v != testLatencies.AvgWrite && v != testLatencies.P99Write {
			t.Fatalf("write slept %v", v)
		}
	}

	if err := d.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := d.Discard(0, 512); err != nil {
		t.Fatal(err)
	}
	if err := d.WriteZeroes(0, 512); err != nil {
		t.Fatal(err)
	}
	if got := s.take(); len(got) != 0 {
		t.Fatalf("flush/discard/write-zeroes slept %v", got)
	}

	// Rejected IO is not delayed.
	if err := d.ReadAt(p, 1); !errors.Is(err, bdev.ErrInvalidIO) {
		t.Fatalf("misaligned read = %v", err)
	}
	if got := s.take(); len(got) != 0 {
		t.Fatalf("rejected IO slept %v", got)
	}
}

func TestSetLatency(t *testing.T) {
	var s sleeps
	d := newDelay(t, bdevtest.NewMalloc(t, "Malloc0", 64), &s)
	for _, k := range []delay.LatencyKind{delay.AvgRead, delay.P99Read} {
		if err := d.SetLatency(k, 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.ReadAt(make([]byte, 512), 0); err != nil {
		t.Fatal(err)
	}
	if got := s.take(); len(got) != 0 {
		t.Fatalf("zero latency slept %v", got)
	}
	if err := d.SetLatency(delay.AvgWrite, 3*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if err := d.SetLatency(delay.P99Write, 3*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if err := d.WriteAt(make([]byte, 512), 0, true); err != nil {
		t.Fatal(err)
	}
	if got := s.take(); len(got) != 1 || got[0] != 3*time.Millisecond {
		t.Fatalf("after SetLatency write slept %v, want [3ms]", got)
	}
	want := delay.Latencies{AvgWrite: 3 * time.Millisecond, P99Write: 3 * time.Millisecond}
	if d.Latencies() != want {
		t.Fatalf("Latencies = %+v, want %+v", d.Latencies(), want)
	}
	if err := d.SetLatency(delay.AvgRead, -time.Second); err == nil {
		t.Fatal("negative latency accepted")
	}
	if err := d.SetLatency(delay.LatencyKind(9), time.Second); err == nil {
		t.Fatal("unknown kind accepted")
	}
}

// TestSetLatencyConcurrentWithIO changes latencies while IO runs (for the
// race detector) and checks every sleep is one of the values ever set.
func TestSetLatencyConcurrentWithIO(t *testing.T) {
	var s sleeps
	d := newDelay(t, bdevtest.NewMalloc(t, "Malloc0", 64), &s)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			p := make([]byte, 512)
			for i := range 500 {
				if err := d.ReadAt(p, int64(i%64)*512); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	for i := range 200 {
		if err := d.SetLatency(delay.AvgRead, time.Duration(i)*time.Microsecond); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	for _, v := range s.take() {
		if v != testLatencies.P99Read && (v < 0 || v >= 200*time.Microsecond) {
			t.Fatalf("slept %v, never set", v)
		}
	}
}

// TestSleepHoldsNoLock blocks one read in its delay and checks that other
// IO and Close proceed meanwhile.
func TestSleepHoldsNoLock(t *testing.T) {
	m := bdevtest.NewMalloc(t, "Malloc0", 64)
	entered, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	d, err := delay.New(m, delay.Config{Name: "Delay0", Latencies: delay.Latencies{AvgRead: 1, P99Read: 1}, Sleep: func(time.Duration) {
		first := false
		once.Do(func() { first = true })
		if first {
			close(entered)
			<-release
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error)
	go func() { done <- d.ReadAt(make([]byte, 512), 0) }()
	<-entered
	if err := d.ReadAt(make([]byte, 512), 512); err != nil {
		t.Fatalf("second read while the first sleeps: %v", err)
	}
	closed := make(chan error)
	go func() { closed <- d.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close waited for a sleeping IO")
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatalf("sleeping read = %v, want nil (its IO completed before Close)", err)
	}
}

// TestWrapperContract: abilities follow the inner device, Close leaves it
// open.
func TestWrapperContract(t *testing.T) {
	bdevtest.RunWrapper(t, func(t *testing.T, inner bdev.Device) bdev.Device { return newDelay(t, inner, &sleeps{}) })
}

func TestLatencyKindNames(t *testing.T) {
	for _, k := range []delay.LatencyKind{delay.AvgRead, delay.P99Read, delay.AvgWrite, delay.P99Write} {
		got, err := delay.ParseLatencyKind(k.String())
		if err != nil || got != k {
			t.Errorf("ParseLatencyKind(%q) = %v, %v", k.String(), got, err)
		}
	}
	if delay.P99Write.String() != "p99_write" || delay.LatencyKind(7).String() != "LatencyKind(7)" {
		t.Errorf("names: %q %q", delay.P99Write, delay.LatencyKind(7))
	}
	if _, err := delay.ParseLatencyKind("avg"); err == nil {
		t.Error("ParseLatencyKind accepted an unknown name")
	}
}

// TestRealSleep runs once with the real clock to check the default Sleep.
func TestRealSleep(t *testing.T) {
	d, err := delay.New(bdevtest.NewMalloc(t, "Malloc0", 64), delay.Config{Name: "Delay0", Latencies: delay.Latencies{AvgRead: 5 * time.Millisecond, P99Read: 5 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := d.ReadAt(make([]byte, 512), 0); err != nil {
		t.Fatal(err)
	}
	if el := time.Since(start); el < 5*time.Millisecond {
		t.Fatalf("read took %v, want at least 5ms", el)
	}
}
