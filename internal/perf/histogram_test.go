package perf

import (
	"math"
	"testing"
	"time"
)

// TestBucketsTile: the buckets cover every value once, in order, each at
// most 1/32 wide relative to its lower bound, and bucketOf agrees with
// bucketBounds at both ends.
func TestBucketsTile(t *testing.T) {
	var next uint64
	for i := range numBuckets {
		lo, hi := bucketBounds(i)
		if lo != next {
			t.Fatalf("bucket %d starts at %d, want %d", i, lo, next)
		}
		if hi < lo {
			t.Fatalf("bucket %d: hi %d < lo %d", i, hi, lo)
		}
		if i < numBuckets-1 && lo >= linearMax && float64(hi-lo+1)/float64(lo) > 1.0/subBuckets+1e-12 {
			t.Fatalf("bucket %d [%d, %d] wider than 1/%d", i, lo, hi, subBuckets)
		}
		if bucketOf(lo) != i || bucketOf(hi) != i {
			t.Fatalf("bucketOf(%d) = %d, bucketOf(%d) = %d; want %d", lo, bucketOf(lo), hi, bucketOf(hi), i)
		}
		if hi == math.MaxUint64 {
			if i != numBuckets-1 {
				t.Fatalf("bucket %d reaches the top but is not the last", i)
			}
			return
		}
		next = hi + 1
	}
	t.Fatal("the last bucket does not reach the top")
}

func TestHistogramStats(t *testing.T) {
	var h Histogram
	if h.Percentile(0.5) != 0 || h.Mean() != 0 || h.Min() != 0 {
		t.Fatalf("empty histogram: p50 %v mean %v min %v, want 0", h.Percentile(0.5), h.Mean(), h.Min())
	}
	// 1..10000 us, once each.
	for i := 1; i <= 10000; i++ {
		h.Record(time.Duration(i) * time.Microsecond)
	}
	if h.Count() != 10000 || h.Min() != time.Microsecond || h.Max() != 10*time.Millisecond {
		t.Fatalf("count %d min %v max %v", h.Count(), h.Min(), h.Max())
	}
	if want := 5000500 * time.Nanosecond; h.Mean() != want {
		t.Fatalf("mean %v, want %v", h.Mean(), want)
	}
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 5 * time.Millisecond}, {0.99, 9900 * time.Microsecond}, {0.01, 100 * time.Microsecond}} {
		got := h.Percentile(c.q)
		if got < c.want || float64(got) > float64(c.want)*(1+1.0/subBuckets) {
			t.Errorf("p%v = %v, want %v to +3%%", c.q*100, got, c.want)
		}
	}
	if h.Percentile(1) != h.Max() || h.Percentile(0) != h.Min() {
		t.Errorf("p100 %v p0 %v; want max %v and min %v", h.Percentile(1), h.Percentile(0), h.Max(), h.Min())
	}
}

func TestHistogramMergeAndExtremes(t *testing.T) {
	var a, b, empty Histogram
	a.Record(3 * time.Microsecond)
	b.Record(time.Microsecond)
	b.Record(2 * time.Hour) // beyond the tracked range: last bucket, exact max
	b.Record(-time.Second)  // a clock step back counts as 0
	a.Merge(&b)
	a.Merge(&empty)
	if a.Count() != 4 || a.Min() != 0 || a.Max() != 2*time.Hour {
		t.Fatalf("merged: count %d min %v max %v", a.Count(), a.Min(), a.Max())
	}
	if a.Percentile(1) != 2*time.Hour {
		t.Fatalf("p100 %v, want the exact max", a.Percentile(1))
	}
	var c Histogram
	c.Merge(&b)
	if c.Min() != 0 || c.Count() != 3 {
		t.Fatalf("merge into empty: min %v count %d", c.Min(), c.Count())
	}
}
