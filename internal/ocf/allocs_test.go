package ocf_test

import (
	"testing"

	"blockcache/internal/ocf"
	"blockcache/internal/ocf/ocftest"
)

// TestHitsDoNotAllocate: a 4 KiB read hit, a write-through hit over clean
// data and a write-back hit over dirty data allocate nothing. (A request
// that escapes to the heap, say through a deferred call taken in a loop,
// makes every write allocate.) Requests of more than two lines borrow
// their per-line state from a sync.Pool, which the race detector empties
// at random, so they are left to the benchmarks' allocs/op.
func TestHitsDoNotAllocate(t *testing.T) {
	cases := []struct {
		name  string
		mode  ocf.Mode
		write bool
	}{
		{"read-hit-wt", ocf.ModeWT, false},
		{"write-hit-wt", ocf.ModeWT, true},
		{"write-hit-wb", ocf.ModeWB, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			env := ocftest.New(t, ocftest.Options{Lines: 64, Mode: tc.mode, CoreBytes: 1 << 20})
			co := env.Cores[0]
			p := make([]byte, 4096)
			// Insert the line (a write in wb leaves it dirty, as the
			// write hits then find it).
			if err := co.WriteAt(p, 8192, false); err != nil {
				t.Fatal(err)
			}
			if err := co.ReadAt(p, 8192); err != nil {
				t.Fatal(err)
			}
			co.ResetStats()
			var err error
			allocs := testing.AllocsPerRun(100, func() {
				if tc.write {
					err = co.WriteAt(p, 8192, false)
				} else {
					err = co.ReadAt(p, 8192)
				}
			})
			if err != nil {
				t.Fatal(err)
			}
			r := co.Stats().Requests
			if hits := r.RdHits + r.WrHits; hits == 0 || hits != r.Total {
				t.Fatalf("not every request hit: %+v", r)
			}
			if allocs != 0 {
				t.Errorf("%v allocations per hit, want 0", allocs)
			}
		})
	}
}
