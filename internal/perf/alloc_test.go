package perf

import (
	"testing"

	"github.com/google/uuid"

	"blockcache/internal/bdev"
	"blockcache/internal/bdev/null"
	"blockcache/internal/latency"
)

// slotFor prepares job j as Run would and returns its first slot.
func slotFor(tb testing.TB, j Job) *slot {
	tb.Helper()
	js, err := newJobState(j, 0)
	if err != nil {
		tb.Fatal(err)
	}
	return js.slots[0]
}

// TestNoAllocationPerIO: an IO of every workload, with its latency
// recorded, allocates nothing once the job is set up, on a RAM disk and on
// the null device.
func TestNoAllocationPerIO(t *testing.T) {
	nd, err := null.New("Null0", uuid.New(), 512, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	devs := []bdev.Device{newMalloc(t, "Malloc0", 1<<14), nd}
	for _, dev := range devs {
		for w := range Workload(len(workloadNames)) {
			if w == Unmap && !dev.Info().Abilities.Discard || w == Verify && dev == bdev.Device(nd) {
				continue // null cannot unmap, and drops what is written
			}
			s := slotFor(t, Job{Name: "j", Dev: dev, Workload: w, QueueDepth: 4, IOSize: 4096, ReadPercent: 50})
			t0 := latency.Now()
			allocs := testing.AllocsPerRun(1000, func() {
				if err := s.do(); err != nil {
					t.Fatal(err)
				}
				t1 := latency.Now()
				s.hist.Record(t1.Sub(t0))
				t0 = t1
			})
			if allocs != 0 {
				t.Errorf("%s %v: %v allocations per IO", dev.Info().Name, w, allocs)
			}
		}
	}
}

// BenchmarkIO measures one IO of the load generator on a RAM disk, the
// engine's own cost per IO on top of the copy: run with -benchmem, it
// reports 0 allocs/op.
// The null device's IO does nothing, so its rows are the engine alone.
func BenchmarkIO(b *testing.B) {
	nd, err := null.New("Null0", uuid.New(), 512, 1<<20)
	if err != nil {
		b.Fatal(err)
	}
	for _, c := range []struct {
		w   Workload
		dev bdev.Device
	}{{RandRead, nd}, {RandRead, newMalloc(b, "Malloc0", 1<<16)}, {RandWrite, newMalloc(b, "Malloc1", 1<<16)}, {Verify, newMalloc(b, "Malloc2", 1<<16)}} {
		b.Run(c.w.String()+"/"+c.dev.Info().Name, func(b *testing.B) {
			s := slotFor(b, Job{Name: "j", Dev: c.dev, Workload: c.w, QueueDepth: 1, IOSize: 4096})
			b.ReportAllocs()
			t0 := latency.Now()
			for b.Loop() {
				if err := s.do(); err != nil {
					b.Fatal(err)
				}
				t1 := latency.Now()
				s.hist.Record(t1.Sub(t0))
				t0 = t1
			}
		})
	}
}
