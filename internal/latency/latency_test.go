package latency

import (
	"sync"
	"testing"
	"time"
	"unsafe"
)

func TestBucketBounds(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want int
	}{
		{0, 0}, {1, 0}, {time.Microsecond, 0},
		{time.Microsecond + 1, 1}, {2 * time.Microsecond, 1},
		{2*time.Microsecond + 1, 2}, {4 * time.Microsecond, 2},
		{1023 * time.Microsecond, 10}, {1024 * time.Microsecond, 10}, {1025 * time.Microsecond, 11},
		{Bound(NumBuckets - 1), NumBuckets - 1},
		{Bound(NumBuckets-1) + 1, NumBuckets},
		{time.Hour, NumBuckets},
	} {
		if got := bucket(int64(tc.d)); got != tc.want {
			t.Errorf("bucket(%v) = %d, want %d", tc.d, got, tc.want)
		}
	}
	// Every bound falls in its own bucket and the next nanosecond in the next.
	for i := range NumBuckets {
		if got := bucket(int64(Bound(i))); got != i {
			t.Errorf("bucket(Bound(%d)=%v) = %d", i, Bound(i), got)
		}
		if got := bucket(int64(Bound(i)) + 1); got != i+1 {
			t.Errorf("bucket(Bound(%d)+1) = %d, want %d", i, got, i+1)
		}
	}
}

func TestRecordSnapshotQuantile(t *testing.T) {
	var h Histogram
	s := h.Snapshot()
	if s.Count() != 0 || s.Quantile(0.5) != 0 {
		t.Fatalf("empty histogram: count %d p50 %v", s.Count(), s.Quantile(0.5))
	}
	for range 90 {
		h.Record(3 * time.Microsecond) // bucket 2 (≤ 4 µs)
	}
	for range 10 {
		h.Record(3 * time.Millisecond) // bucket 12 (≤ 4.096 ms)
	}
	h.Record(-time.Second) // counts as zero
	s = h.Snapshot()
	if s.Count() != 101 || s.Counts[2] != 90 || s.Counts[12] != 10 || s.Counts[0] != 1 {
		t.Fatalf("counts %v", s.Counts)
	}
	if want := 90*3*time.Microsecond + 10*3*time.Millisecond; s.Sum != want {
		t.Errorf("sum %v, want %v", s.Sum, want)
	}
	if p := s.Quantile(0.5); p != 4*time.Microsecond {
		t.Errorf("p50 %v, want 4µs", p)
	}
	if p := s.Quantile(0.99); p != Bound(12) {
		t.Errorf("p99 %v, want %v", p, Bound(12))
	}
	h.Record(time.Hour)
	s2 := h.Snapshot()
	if s2.Quantile(1) != -1 {
		t.Errorf("p100 with an overflow: %v, want -1", s2.Quantile(1))
	}
	d := s2.Sub(s)
	if d.Count() != 1 || d.Counts[NumBuckets] != 1 || d.Sum != time.Hour {
		t.Errorf("Sub: %+v", d)
	}
	if a := s.Add(d); a != s2 {
		t.Errorf("Add(Sub) = %+v, want %+v", a, s2)
	}
}

func TestConcurrentRecord(t *testing.T) {
	var h Histogram
	var wg sync.WaitGroup
	const workers, each = 4, 1000
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				h.Record(time.Duration(w*each+i) * time.Microsecond)
			}
		})
	}
	wg.Wait()
	if s := h.Snapshot(); s.Count() != workers*each {
		t.Fatalf("count %d, want %d", s.Count(), workers*each)
	}
}

func TestRecordAllocatesNothing(t *testing.T) {
	var h Histogram
	start := Now()
	if n := testing.AllocsPerRun(100, func() { h.Since(start) }); n != 0 {
		t.Fatalf("Since allocates %v per call", n)
	}
	if Now() < start {
		t.Fatal("the clock went backwards")
	}
}

func BenchmarkSince(b *testing.B) {
	var h Histogram
	for b.Loop() {
		h.Since(Now())
	}
}

func TestShardedSumsShards(t *testing.T) {
	var s Sharded
	for i := range uint64(3 * NumShards) {
		s.Record(i, time.Duration(i)*time.Millisecond)
	}
	s.Since(7, Now())
	snap := s.Snapshot()
	if snap.Count() != 3*NumShards+1 {
		t.Fatalf("count %d, want %d", snap.Count(), 3*NumShards+1)
	}
	var want time.Duration
	for i := range 3 * NumShards {
		want += time.Duration(i) * time.Millisecond
	}
	if snap.Sum < want || snap.Sum > want+time.Second {
		t.Errorf("sum %v, want about %v", snap.Sum, want)
	}
	if n := testing.AllocsPerRun(100, func() { s.Since(3, Now()) }); n != 0 {
		t.Errorf("Since allocates %v", n)
	}
}

func TestShardLayout(t *testing.T) {
	if got := unsafe.Sizeof(Histogram{}); got != 232 {
		t.Fatalf("Histogram is %d bytes; paddedHistogram assumes 232", got)
	}
	if got := unsafe.Sizeof(paddedHistogram{}); got%64 != 0 || got-232 < 64 {
		t.Fatalf("a shard is %d bytes: not a whole number of 64-byte lines with a line of padding", got)
	}
}
