package hrtimer

import (
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"
)

func newTimer(t testing.TB) *Timer {
	t.Helper()
	tm, err := New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tm.Close() })
	return tm
}

// TestSleepAtLeast: goroutines sleep random durations at once, the
// deadlines interleaved (a later Sleep often has the earlier deadline and
// re-arms the timer); every Sleep lasts at least its duration and all
// return.
func TestSleepAtLeast(t *testing.T) {
	tm := newTimer(t)
	const workers, sleeps = 32, 40
	var wg sync.WaitGroup
	short := make(chan string, workers*sleeps)
	for w := range workers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			for range sleeps {
				d := time.Duration(rng.IntN(2000)) * time.Microsecond
				start := time.Now()
				tm.Sleep(d)
				if got := time.Since(start); got < d {
					short <- got.String() + " < " + d.String()
				}
			}
		})
	}
	waitGroup(t, &wg, 30*time.Second)
	close(short)
	for s := range short {
		t.Errorf("Sleep returned early: %s", s)
	}
	tm.mu.Lock()
	defer tm.mu.Unlock()
	if n := tm.mu.sleepers.Len(); n != 0 {
		t.Fatalf("%d sleepers left in the heap", n)
	}
}

// TestSleepersWakeInDeadlineOrder: sleepers started one after another with
// decreasing durations wake in the order of their deadlines, not of their
// calls.
func TestSleepersWakeInDeadlineOrder(t *testing.T) {
	tm := newTimer(t)
	var mu sync.Mutex
	var order []int
	var wg sync.WaitGroup
	for i := range 5 {
		d := time.Duration(5-i) * 40 * time.Millisecond // 200, 160, ... 40 ms
		wg.Go(func() {
			tm.Sleep(d)
			mu.Lock()
			order = append(order, i)
			mu.Unlock()
		})
		time.Sleep(2 * time.Millisecond)
	}
	waitGroup(t, &wg, 10*time.Second)
	if want := []int{4, 3, 2, 1, 0}; !slices.Equal(order, want) {
		t.Fatalf("woke in order %v, want %v", order, want)
	}
}

// TestCloseLetsSleepersFinish: Close with sleepers asleep returns at once;
// each sleeper still sleeps its whole duration, then the goroutine ends. A
// Sleep after Close sleeps too.
func TestCloseLetsSleepersFinish(t *testing.T) {
	tm, err := New()
	if err != nil {
		t.Fatal(err)
	}
	const d = 50 * time.Millisecond
	start := time.Now()
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() { tm.Sleep(d) })
	}
	waitFor(t, func() bool {
		tm.mu.Lock()
		defer tm.mu.Unlock()
		return tm.mu.sleepers.Len() == 3
	})
	if err := tm.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := tm.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	waitGroup(t, &wg, 10*time.Second)
	if got := time.Since(start); got < d {
		t.Fatalf("sleepers returned after %v, before their %v", got, d)
	}
	select {
	case <-tm.done:
	case <-time.After(10 * time.Second):
		t.Fatal("the timer's goroutine did not end after its last sleeper")
	}
	after := time.Now()
	tm.Sleep(d)
	if got := time.Since(after); got < d {
		t.Fatalf("Sleep after Close lasted %v, want at least %v", got, d)
	}
}

// TestCloseIdle: Close with nobody asleep ends the goroutine.
func TestCloseIdle(t *testing.T) {
	tm, err := New()
	if err != nil {
		t.Fatal(err)
	}
	tm.Sleep(time.Microsecond)
	if err := tm.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	select {
	case <-tm.done:
	case <-time.After(10 * time.Second):
		t.Fatal("the timer's goroutine did not end")
	}
}

// TestSleepLongestDuration: a Sleep whose deadline is beyond the int64
// range of nanoseconds (the delay bdev takes latencies up to
// math.MaxInt64 ns) neither wraps into the past, so that the next
// wake-up ends it, nor keeps the timer from waking a short Sleep after it.
func TestSleepLongestDuration(t *testing.T) {
	tm := newTimer(t)
	time.Sleep(time.Millisecond) // the timer's base is in the past
	long := make(chan struct{})
	go func() {
		tm.Sleep(time.Duration(math.MaxInt64))
		close(long)
	}()
	waitFor(t, func() bool {
		tm.mu.Lock()
		defer tm.mu.Unlock()
		return tm.mu.sleepers.Len() == 1
	})
	short := make(chan struct{})
	go func() {
		tm.Sleep(time.Millisecond)
		close(short)
	}()
	select {
	case <-short:
	case <-long:
		t.Fatal("Sleep(math.MaxInt64) returned")
	case <-time.After(10 * time.Second):
		t.Fatal("Sleep(1ms) after a Sleep(math.MaxInt64) still asleep after 10s")
	}
	select {
	case <-long:
		t.Fatal("Sleep(math.MaxInt64) returned")
	case <-time.After(50 * time.Millisecond):
	}
}

// TestSleepDoesNotAllocate: once a sleeper has been made, Sleep reuses it.
func TestSleepDoesNotAllocate(t *testing.T) {
	tm := newTimer(t)
	tm.Sleep(time.Microsecond)
	if n := testing.AllocsPerRun(50, func() { tm.Sleep(time.Microsecond) }); n != 0 {
		t.Fatalf("Sleep allocates %.1f times", n)
	}
}

// BenchmarkOvershoot reports how late a sleep of each duration returns
// (overshoot-ns/op), by this Timer and by time.Sleep in the same run, on an
// otherwise idle process.
func BenchmarkOvershoot(b *testing.B) {
	tm := newTimer(b)
	for _, d := range []time.Duration{100 * time.Microsecond, time.Millisecond, 1500 * time.Microsecond} {
		for _, c := range []struct {
			name  string
			sleep func(time.Duration)
		}{{"hrtimer", tm.Sleep}, {"time.Sleep", time.Sleep}} {
			b.Run(d.String()+"/"+c.name, func(b *testing.B) {
				var late time.Duration
				for b.Loop() {
					start := time.Now()
					c.sleep(d)
					late += time.Since(start) - d
				}
				b.ReportMetric(float64(late.Nanoseconds())/float64(b.N), "overshoot-ns/op")
			})
		}
	}
}

func waitGroup(t *testing.T, wg *sync.WaitGroup, limit time.Duration) {
	t.Helper()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(limit):
		t.Fatalf("sleepers still asleep after %v", limit)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
		time.Sleep(time.Millisecond)
	}
}
