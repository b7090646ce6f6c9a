package sim

import (
	"math"
	"math/rand/v2"
	"sort"
)

// zipf draws ranks 0..n-1 with P(rank k) proportional to 1/(k+1)^s, for any
// skew s >= 0 (s = 0 is uniform), by inverting a cumulative table: exact, and
// fast enough for the working sets a trace covers (math/rand's Zipf needs
// s > 1, which rules out the skews real workloads show, around 0.6 to 1.2).
type zipf struct {
	cdf []float64 // cdf[k] = P(rank <= k); cdf[n-1] = 1
}

func newZipf(n int, s float64) *zipf {
	cdf := make([]float64, n)
	sum := 0.0
	for k := range cdf {
		sum += math.Pow(float64(k+1), -s)
		cdf[k] = sum
	}
	for k := range cdf {
		cdf[k] /= sum
	}
	cdf[n-1] = 1
	return &zipf{cdf: cdf}
}

// rank draws a rank: the first k with u < cdf[k], u uniform in [0, 1).
func (z *zipf) rank(rng *rand.Rand) int {
	u := rng.Float64()
	k := sort.Search(len(z.cdf), func(k int) bool { return u < z.cdf[k] })
	return min(k, len(z.cdf)-1)
}
