// Package latency is a fixed-bucket latency histogram for the data path:
// recording is two atomic adds, lock-free and allocation-free, so it can sit
// on every IO; readers take a Snapshot at any time.
//
// Buckets are exponential, doubling from 1 µs: bucket i counts durations of
// at most 2^i µs (i < NumBuckets); durations beyond the last bound count
// only in the overflow bucket, as Prometheus' le="+Inf".
package latency

import (
	"math/bits"
	"sync/atomic"
	"time"
)

// NumBuckets is the number of bounded buckets: 1 µs up to 2^26 µs (about
// 67 s). The overflow bucket comes after them.
const NumBuckets = 27

// firstBound is the upper bound of bucket 0, in nanoseconds.
const firstBound = 1000

// Bound returns the inclusive upper bound of bucket i (0 ≤ i < NumBuckets).
func Bound(i int) time.Duration { return time.Duration(firstBound) << i }

// Histogram counts durations into fixed buckets. The zero value is ready;
// Record and Snapshot are safe for concurrent use. Each bucket and the sum
// are updated on their own, so a Snapshot taken during Record may see the
// count without the sum for a moment; both only grow.
type Histogram struct {
	counts [NumBuckets + 1]atomic.Uint64
	sumNs  atomic.Uint64
}

// bucket returns the index of the bucket counting d.
func bucket(ns int64) int {
	if ns <= firstBound {
		return 0
	}
	// ns in (1000·2^(i-1), 1000·2^i] has (ns-1)/1000 in [2^(i-1), 2^i).
	return min(bits.Len64(uint64(ns-1)/firstBound), NumBuckets)
}

// Record counts one duration; a negative one counts as zero.
func (h *Histogram) Record(d time.Duration) {
	ns := max(int64(d), 0)
	h.counts[bucket(ns)].Add(1)
	h.sumNs.Add(uint64(ns))
}

// Since records the time elapsed since start (a Now reading).
func (h *Histogram) Since(start Stamp) { h.Record(Now().Sub(start)) }

// Snapshot is a histogram's counts at one moment.
type Snapshot struct {
	// Counts holds each bucket's own count (not cumulative); the last is
	// the overflow bucket.
	Counts [NumBuckets + 1]uint64
	// Sum is the total of the recorded durations.
	Sum time.Duration
}

// Snapshot returns the current counts.
func (h *Histogram) Snapshot() Snapshot {
	var s Snapshot
	for i := range h.counts {
		s.Counts[i] = h.counts[i].Load()
	}
	s.Sum = time.Duration(h.sumNs.Load())
	return s
}

// Count returns the number of recorded durations.
func (s *Snapshot) Count() uint64 {
	var n uint64
	for _, c := range s.Counts {
		n += c
	}
	return n
}

// Sub returns the durations recorded between old and s (s taken later).
func (s Snapshot) Sub(old Snapshot) Snapshot {
	for i := range s.Counts {
		s.Counts[i] -= min(old.Counts[i], s.Counts[i])
	}
	s.Sum -= min(old.Sum, s.Sum)
	return s
}

// Add returns the sum of two snapshots (of several devices).
func (s Snapshot) Add(o Snapshot) Snapshot {
	for i := range s.Counts {
		s.Counts[i] += o.Counts[i]
	}
	s.Sum += o.Sum
	return s
}

// Quantile returns the upper bound of the bucket holding the q-quantile
// (0 < q ≤ 1) of the recorded durations: an overestimate by at most a
// factor of two. It returns 0 when nothing was recorded, and -1 when the
// quantile lies in the overflow bucket.
func (s *Snapshot) Quantile(q float64) time.Duration {
	n := s.Count()
	if n == 0 {
		return 0
	}
	rank := uint64(q*float64(n) + 0.5)
	rank = min(max(rank, 1), n)
	var seen uint64
	for i, c := range s.Counts[:NumBuckets] {
		if seen += c; seen >= rank {
			return Bound(i)
		}
	}
	return -1
}
