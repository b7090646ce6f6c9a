package delay_test

import (
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"blockcache/internal/bdev/delay"
	"blockcache/internal/bdev/malloc"
)

// BenchmarkDelayRead4K reads 4 KiB from a malloc device behind a 1 ms
// delay with 16 IOs in flight, as the slow-core benchmark's misses do. Wall
// time per op is the delay divided by 16 and says little; what the delay
// device costs is its CPU: cpu-ns/op is the process's CPU time (user and
// system, which unlike ns/op does not grow when other processes share the
// CPUs) per read, and lat-us the mean time a read took, from the call
// to the return (the delay, the timer's lateness and the wait for a CPU
// once woken).
func BenchmarkDelayRead4K(b *testing.B) {
	inner, err := malloc.New("Malloc0", uuid.Nil, 512, 16<<20/512)
	if err != nil {
		b.Fatal(err)
	}
	const lat = time.Millisecond
	d, err := delay.New(inner, delay.Config{Name: "Delay0", Latencies: delay.Latencies{AvgRead: lat, P99Read: lat, AvgWrite: lat, P99Write: lat}})
	if err != nil {
		b.Fatal(err)
	}
	const depth = 16
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := cpuTime(b)
	var took atomic.Int64 // nanoseconds, summed over the reads
	for range depth {
		wg.Go(func() {
			p := make([]byte, 4096)
			for i := next.Add(1); i <= int64(b.N); i = next.Add(1) {
				t0 := time.Now()
				if err := d.ReadAt(p, i%4096*4096); err != nil {
					b.Error(err)
				}
				took.Add(int64(time.Since(t0)))
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	n := float64(b.N)
	b.ReportMetric(float64(cpuTime(b)-cpu0)/n, "cpu-ns/op")
	b.ReportMetric(float64(took.Load())/n/1e3, "lat-us")
}

// cpuTime is the CPU time the process has used, user and system.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
