package perf

import (
	"math"
	"math/bits"
	"time"
)

// Histogram counts latencies in fixed buckets, log-linear like
// HdrHistogram: exact below 64 ns, then 32 buckets per power of two, so a
// bucket is at most 1/32 (3%) wide relative to its values. Latencies
// beyond maxTrackable fall into the last bucket; Min, Max and the sum
// are exact whatever the value. Record never allocates.
//
// A Histogram is not safe for concurrent use: each queue slot records into
// its own, and Merge combines them once the run is over.
type Histogram struct {
	counts [numBuckets]uint64
	n      uint64
	sumNs  uint64
	minNs  uint64
	maxNs  uint64
}

const (
	subBucketBits = 5
	subBuckets    = 1 << subBucketBits // per power of two
	// linearMax is the first value not counted exactly.
	linearMax = 2 * subBuckets
	// maxShift bounds the bucket shift: latencies of 2^(maxShift+6) ns
	// (about 68 s) and more share the last bucket.
	maxShift   = 30
	numBuckets = (maxShift+2)*subBuckets + 1
)

// bucketOf maps a latency in nanoseconds to its bucket.
func bucketOf(ns uint64) int {
	if ns < linearMax {
		return int(ns)
	}
	shift := bits.Len64(ns) - (subBucketBits + 1)
	if shift > maxShift {
		return numBuckets - 1
	}
	return (shift+1)*subBuckets + int(ns>>uint(shift)) - subBuckets
}

// bucketBounds returns the smallest and largest latency bucket i holds.
func bucketBounds(i int) (lo, hi uint64) {
	if i < linearMax {
		return uint64(i), uint64(i)
	}
	shift := uint(i/subBuckets - 1)
	mant := uint64(i%subBuckets + subBuckets)
	lo = mant << shift
	hi = (mant+1)<<shift - 1
	if i == numBuckets-1 {
		hi = math.MaxUint64
	}
	return lo, hi
}

// Record counts one latency.
func (h *Histogram) Record(d time.Duration) {
	ns := uint64(max(d, 0))
	h.counts[bucketOf(ns)]++
	if h.n == 0 || ns < h.minNs {
		h.minNs = ns
	}
	if ns > h.maxNs {
		h.maxNs = ns
	}
	h.n++
	h.sumNs += ns
}

// Merge adds o's counts to h.
func (h *Histogram) Merge(o *Histogram) {
	if o.n == 0 {
		return
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	if h.n == 0 || o.minNs < h.minNs {
		h.minNs = o.minNs
	}
	h.maxNs = max(h.maxNs, o.maxNs)
	h.n += o.n
	h.sumNs += o.sumNs
}

// Count is the number of latencies recorded.
func (h *Histogram) Count() uint64 { return h.n }

// Min is the smallest latency recorded, 0 if none.
func (h *Histogram) Min() time.Duration { return time.Duration(h.minNs) }

// Max is the largest latency recorded.
func (h *Histogram) Max() time.Duration { return time.Duration(h.maxNs) }

// Mean is the average latency, 0 if none.
func (h *Histogram) Mean() time.Duration {
	if h.n == 0 {
		return 0
	}
	return time.Duration(h.sumNs / h.n)
}

// Percentile returns the latency below or at which fraction q (0..1) of
// the recorded latencies lie: the upper bound of the bucket where the
// cumulative count reaches q, clamped to [Min, Max]; exactly Min for the
// first rank and Max for the last. It is 0 if nothing was recorded.
func (h *Histogram) Percentile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.n)))
	switch {
	case rank <= 1:
		return time.Duration(h.minNs)
	case rank >= h.n:
		return time.Duration(h.maxNs)
	}
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			_, hi := bucketBounds(i)
			return time.Duration(min(max(hi, h.minNs), h.maxNs))
		}
	}
	return time.Duration(h.maxNs)
}
