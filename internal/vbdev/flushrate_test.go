package vbdev

import (
	"math"
	"testing"
	"time"
)

// TestRateMeter: the rate looks back rateWindow from now, falls while no
// progress comes, and keeps only the samples it needs.
func TestRateMeter(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	var r rateMeter
	if got := r.rate(t0); got != 0 {
		t.Errorf("rate with no sample: %v", got)
	}
	r.add(at(0), 0)
	if got := r.rate(at(0)); got != 0 {
		t.Errorf("rate at the first sample: %v", got)
	}
	// 1 MB/s for 10 s, a sample every 100 ms.
	for i := 1; i <= 100; i++ {
		r.add(at(float64(i)/10), int64(i)*100_000)
	}
	check := func(now float64, want float64) {
		t.Helper()
		if got := r.rate(at(now)); math.Abs(got-want) > want*1e-9+1e-9 {
			t.Errorf("rate at %vs: %v, want %v", now, got, want)
		}
	}
	check(10, 1e6)
	// Nothing for 2.5 s: the window from 7.5 s to 12.5 s holds 2.5 MB.
	check(12.5, 2.5e6/5)
	// 5 s with no progress: 0.
	check(15, 0)
	check(20, 0)
	if n := len(r.samples); n > 52 {
		t.Errorf("%d samples kept for a 5 s window of one every 100 ms", n)
	}
	// 24 MB more at 16 s: the window from 11 s starts at the newest sample
	// before it, the one at 10 s.
	r.add(at(16), 1e7+24e6)
	check(16, 24e6/6)
}
