package ocf_test

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"blockcache/internal/bdev"
	"blockcache/internal/bdev/file"
	"blockcache/internal/bdev/malloc"

	"blockcache/internal/ocf"
	"blockcache/internal/ocf/ocftest"
)

// Benchmarks of the 4 KiB data path on malloc devices, each single-threaded
// ("1") and with b.RunParallel over GOMAXPROCS goroutines ("parallel").
// Memcpy4K is the floor: one 4 KiB copy, which every cached read or write
// does at least once (malloc copies under its stripe lock).

const benchBlock = 4096

// benchCase is one benchmark's setup: newOp builds a per-goroutine operation
// (it may keep state, such as a buffer); done, if set, runs after the timed
// loop to check and report what the loop did.
type benchCase struct {
	newOp func() func()
	done  func(b *testing.B)
}

// benchBoth runs a "1" and a "parallel" sub-benchmark, each on a fresh setup.
func benchBoth(b *testing.B, setup func(b *testing.B) benchCase) {
	b.Run("1", func(b *testing.B) {
		bc := setup(b)
		op := bc.newOp()
		b.ReportAllocs()
		b.SetBytes(benchBlock)
		b.ResetTimer()
		for b.Loop() {
			op()
		}
		b.StopTimer()
		if bc.done != nil {
			bc.done(b)
		}
	})
	b.Run("parallel", func(b *testing.B) {
		bc := setup(b)
		b.ReportAllocs()
		b.SetBytes(benchBlock)
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			op := bc.newOp()
			for pb.Next() {
				op()
			}
		})
		b.StopTimer()
		if bc.done != nil {
			bc.done(b)
		}
	})
}

func BenchmarkMemcpy4K(b *testing.B) {
	benchBoth(b, func(*testing.B) benchCase {
		return benchCase{newOp: func() func() {
			src, dst := make([]byte, benchBlock), make([]byte, benchBlock)
			src[17] = 1
			return func() { copy(dst, src) }
		}}
	})
}

// BenchmarkMemcpy4KWorkingSet is the like-for-like floor of the hit
// benchmarks: 4 KiB copies from benchHotLines buffers round robin, the same
// memory footprint as their cache lines, so the copy runs at the same cache
// level (L2 here rather than Memcpy4K's L1).
func BenchmarkMemcpy4KWorkingSet(b *testing.B) {
	benchBoth(b, func(*testing.B) benchCase {
		src := make([]byte, benchHotLines*benchBlock)
		var next atomic.Int64
		return benchCase{newOp: func() func() {
			dst := make([]byte, benchBlock)
			walk := hotWalk(next.Add(1) - 1)
			return func() {
				l := walk()
				copy(dst, src[l*benchBlock:(l+1)*benchBlock])
			}
		}}
	})
}

// benchHotLines is the working set of the hit benchmarks: well inside the
// cache, spread over many stripes.
const benchHotLines = 256

// hotWalk returns the g-th goroutine's walk over benchHotLines lines: from
// its own starting line, with its own odd stride (so it visits every line),
// so that goroutines do not fall into step on the same lines, which no
// workload of independent clients does for long.
func hotWalk(g int64) func() int64 {
	line, stride := (g*37)%benchHotLines, 2*g+1
	return func() int64 {
		l := line
		line = (line + stride) % benchHotLines
		return l
	}
}

// hitBench builds a cache of 1024 4 KiB lines in mode, warms benchHotLines
// lines with warm, and returns per-goroutine ops that act on them, each
// goroutine on its own walk (hotWalk).
func hitBench(b *testing.B, mode ocf.Mode, write bool) benchCase {
	env := ocftest.New(b, ocftest.Options{Lines: 1024, Mode: mode, CoreBytes: 16 << 20})
	co := env.Cores[0]
	buf := make([]byte, benchBlock)
	for i := range benchHotLines {
		var err error
		if write {
			err = co.WriteAt(buf, int64(i)*benchBlock, false)
		} else {
			err = co.ReadAt(buf, int64(i)*benchBlock)
		}
		if err != nil {
			b.Fatal(err)
		}
	}
	co.ResetStats()
	var next atomic.Int64
	done := func(b *testing.B) {
		s := co.Stats().Requests
		hits, total := s.RdHits, s.RdTotal
		if write {
			hits, total = s.WrHits, s.WrTotal
		}
		if total == 0 || hits != s.Total {
			b.Errorf("hit benchmark did not only hit: %+v", s)
		}
	}
	newOp := func() func() {
		p := make([]byte, benchBlock)
		walk := hotWalk(next.Add(1) - 1)
		return func() {
			line := walk()
			var err error
			if write {
				err = co.WriteAt(p, line*benchBlock, false)
			} else {
				err = co.ReadAt(p, line*benchBlock)
			}
			if err != nil {
				b.Error(err)
			}
		}
	}
	return benchCase{newOp: newOp, done: done}
}

// BenchmarkReadHit4K reads 4 KiB blocks that are in the cache (wt).
func BenchmarkReadHit4K(b *testing.B) {
	benchBoth(b, func(b *testing.B) benchCase { return hitBench(b, ocf.ModeWT, false) })
}

// BenchmarkWriteHit4K overwrites 4 KiB blocks already dirty in the cache (wb):
// one cache-device write each, no core IO.
func BenchmarkWriteHit4K(b *testing.B) {
	benchBoth(b, func(b *testing.B) benchCase { return hitBench(b, ocf.ModeWB, true) })
}

// BenchmarkReadMiss4K measures a real read miss with insertion: wt mode, a
// cache of 256 lines and a 64 MiB core (16384 lines) read round robin by one
// shared counter, so every read misses (the line was evicted 16128 reads
// ago): it reads the core, evicts the least recently used clean line and
// writes the block into the cache. The miss ratio is reported as miss%.
func BenchmarkReadMiss4K(b *testing.B) {
	benchBoth(b, func(b *testing.B) benchCase {
		const coreLines = 16384
		env := ocftest.New(b, ocftest.Options{Lines: 256, Mode: ocf.ModeWT, CoreBytes: coreLines * benchBlock})
		co := env.Cores[0]
		// The reads go round robin, a sequential stream: keep the
		// sequential cutoff from taking them around the cache.
		if err := co.SetSeqCutoff(seqCutoffPolicy(ocf.SeqCutoffNever)); err != nil {
			b.Fatal(err)
		}
		var next atomic.Int64
		done := func(b *testing.B) {
			r := co.Stats().Requests
			if r.Total == 0 {
				b.Fatal("no reads")
			}
			miss := float64(r.RdFullMisses) / float64(r.Total)
			b.ReportMetric(100*miss, "miss%")
			if r.RdPT != 0 || miss < 0.99 {
				b.Errorf("read-miss benchmark did not miss and insert: %+v", r)
			}
		}
		newOp := func() func() {
			p := make([]byte, benchBlock)
			return func() {
				line := next.Add(1) % coreLines
				if err := co.ReadAt(p, line*benchBlock); err != nil {
					b.Error(err)
				}
			}
		}
		return benchCase{newOp: newOp, done: done}
	})
}

// BenchmarkWriteBackRandom4K measures what persistent metadata costs: 4 KiB
// write-back writes at random offsets in a 16 MiB working set, the dirty
// data written back every 1024 writes (so writes keep turning clean lines
// dirty, which is what the metadata must record), with persistent and with
// volatile (memory-only) metadata, on malloc devices (so the CPU cost shows,
// undiluted by device time). "noflush" never flushes the volume, as fio's
// randwrite; "flush32" flushes every 32 writes, as a file system's commits,
// which makes the persistent variant write entry sectors each time.
func BenchmarkWriteBackRandom4K(b *testing.B) {
	for _, flushEvery := range []int{0, 32} {
		for _, volatile := range []bool{false, true} {
			name := "noflush"
			if flushEvery > 0 {
				name = fmt.Sprintf("flush%d", flushEvery)
			}
			if volatile {
				name += "/volatile"
			} else {
				name += "/persistent"
			}
			b.Run(name, func(b *testing.B) { writeBackBench(b, volatile, flushEvery) })
		}
	}
}

func writeBackBench(b *testing.B, volatile bool, flushEvery int) {
	const lines = 4096
	cdev, err := malloc.New("cache", uuid.Nil, 512, uint64(ocf.DeviceBytesFor(lines, 4096)/512))
	if err != nil {
		b.Fatal(err)
	}
	nop := ocf.DefaultCleaningParams()
	nop.Kind = ocf.CleanNOP
	c, err := ocf.New(cdev, ocf.Config{Mode: ocf.ModeWB, VolatileMetadata: volatile, Cleaning: &nop})
	if err != nil {
		b.Fatal(err)
	}
	core, err := malloc.New("core", uuid.Nil, 512, lines*8)
	if err != nil {
		b.Fatal(err)
	}
	co, err := c.AddCore(ocf.CoreConfig{Device: core, Volume: bdev.Info{Name: "vol"}})
	if err != nil {
		b.Fatal(err)
	}
	never := seqCutoffPolicy(ocf.SeqCutoffNever)
	if err := co.SetSeqCutoff(never); err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, benchBlock)
	rng := rand.New(rand.NewPCG(1, 2))
	b.ReportAllocs()
	b.SetBytes(benchBlock)
	n := 0
	for b.Loop() {
		if err := co.WriteAt(buf, int64(rng.IntN(lines))*benchBlock, false); err != nil {
			b.Fatal(err)
		}
		n++
		if flushEvery > 0 && n%flushEvery == 0 {
			if err := co.Flush(); err != nil {
				b.Fatal(err)
			}
		}
		if n%1024 == 0 {
			if err := c.FlushDirty(nil, nil); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkWriteThrough128K writes 128 KiB requests in wt mode over a
// working set already in the cache (32 lines a request, each a hit): one
// core write and one cache write a request, as the NBD benchmark's
// sequential-write row.
//
// "copies": on malloc devices. Its floor is the two copies wt cannot
// avoid, into the core and into the cache: each iteration also makes
// them, from the same buffer into destinations as large as the devices,
// timed apart, so that the engine's cost over the copies (wt/memcpy) is
// measured in the same run, under the same load, as the write. ns/op is
// both together; wt-ns/op the write alone.
//
// "engine": the same writes on devices that drop the data (but not the
// metadata), so that ns/op is what the engine itself spends on a request
// of 32 lines: locks, lookups, mask updates, the two device calls.
//
// cpu-ns/op is the process's CPU time per write (all of an iteration),
// which grows less than ns/op when other processes share the CPUs.
func BenchmarkWriteThrough128K(b *testing.B) {
	b.Run("copies", func(b *testing.B) { writeThrough128K(b, false) })
	b.Run("engine", func(b *testing.B) { writeThrough128K(b, true) })
}

func writeThrough128K(b *testing.B, dropData bool) {
	const reqBytes, reqs = 128 << 10, 256 // a 32 MiB working set
	opts := ocftest.Options{Lines: 16384, Mode: ocf.ModeWT, CoreBytes: 2 * reqs * reqBytes}
	if dropData {
		opts.WrapCache = func(d bdev.Device) bdev.Device { return dataDropper{d} }
		opts.WrapCore = func(_ int, d bdev.Device) bdev.Device { return dataDropper{d} }
	}
	env := ocftest.New(b, opts)
	co := env.Cores[0]
	if err := co.SetSeqCutoff(seqCutoffPolicy(ocf.SeqCutoffNever)); err != nil {
		b.Fatal(err)
	}
	p := make([]byte, reqBytes)
	for i := range reqs {
		if err := co.WriteAt(p, int64(i)*reqBytes, false); err != nil {
			b.Fatal(err)
		}
	}
	var cache, core []byte
	if !dropData {
		cache, core = make([]byte, reqs*reqBytes), make([]byte, reqs*reqBytes)
	}
	co.ResetStats()
	b.ReportAllocs()
	b.SetBytes(reqBytes)
	var wt, cp time.Duration
	i := 0
	cpu0 := cpuTime(b)
	for b.Loop() {
		t0 := time.Now()
		if err := co.WriteAt(p, int64(i)*reqBytes, false); err != nil {
			b.Fatal(err)
		}
		if !dropData {
			t1 := time.Now()
			copy(core[i*reqBytes:], p)
			copy(cache[i*reqBytes:], p)
			wt, cp = wt+t1.Sub(t0), cp+time.Since(t1)
		}
		i = (i + 1) % reqs
	}
	b.StopTimer()
	n := float64(b.N)
	b.ReportMetric(float64(cpuTime(b)-cpu0)/n, "cpu-ns/op")
	if r := co.Stats().Requests; r.WrHits != r.Total {
		b.Errorf("write-through benchmark did not only hit: %+v", r)
	}
	if !dropData {
		b.ReportMetric(float64(wt)/n, "wt-ns/op")
		b.ReportMetric(float64(cp)/n, "memcpy-ns/op")
		b.ReportMetric(float64(wt)/float64(cp), "wt/memcpy")
	}
}

// dataDropper passes IO of less than 64 KiB (metadata) to its device and
// drops larger reads and writes (data), for a benchmark that measures the
// engine without the copies.
type dataDropper struct{ bdev.Device }

func (d dataDropper) ReadAt(p []byte, off int64) error {
	if len(p) >= 64<<10 {
		return nil
	}
	return d.Device.ReadAt(p, off)
}

func (d dataDropper) WriteAt(p []byte, off int64, fua bool) error {
	if len(p) >= 64<<10 {
		return nil
	}
	return d.Device.WriteAt(p, off, fua)
}

func BenchmarkMemcpy128Kx2(b *testing.B) {
	const reqBytes, reqs = 128 << 10, 256
	src := make([]byte, reqBytes)
	cache, core := make([]byte, reqs*reqBytes), make([]byte, reqs*reqBytes)
	b.ReportAllocs()
	b.SetBytes(reqBytes)
	i := 0
	for b.Loop() {
		copy(core[i*reqBytes:], src)
		copy(cache[i*reqBytes:], src)
		i = (i + 1) % reqs
	}
}

// BenchmarkDirtyMetadata4K measures what durable dirty state costs (the
// default: a write that makes a line dirty returns once its entry is on
// the cache device) against volatile dirty metadata (durable at flush or
// FUA only), in the same run: 4 KiB write-back writes at random over a
// core four times the cache, Zipf(1.1) or uniform, so that lines keep
// turning dirty (misses, and hits on lines cleaned to make room) and the
// cache keeps evicting dirty lines. The devices are RAM (malloc), which
// shows the CPU and locking cost undiluted; BenchmarkDirtyMetadataDirect4K
// runs the same on direct-IO files. metaw/op is entry-sector writes per
// write: below the share of writes that change dirty state wherever
// group commit shares rounds.
func BenchmarkDirtyMetadata4K(b *testing.B) {
	for _, dist := range []string{"zipf", "uniform"} {
		for _, volatileDirty := range []bool{false, true} {
			name := dist + "/" + map[bool]string{false: "durable", true: "volatile"}[volatileDirty]
			b.Run(name, func(b *testing.B) {
				benchBoth(b, func(b *testing.B) benchCase {
					return dirtyMetaBench(b, dist, volatileDirty, 4096, mallocDevices)
				})
			})
		}
	}
}

// BenchmarkDirtyMetadataDirect4K is BenchmarkDirtyMetadata4K on files
// under /var/tmp opened with O_DIRECT (each flush an fdatasync, each FUA
// write RWF_DSYNC), with a cache of 1024 lines so that the run stays short.
func BenchmarkDirtyMetadataDirect4K(b *testing.B) {
	for _, dist := range []string{"zipf", "uniform"} {
		for _, volatileDirty := range []bool{false, true} {
			name := dist + "/" + map[bool]string{false: "durable", true: "volatile"}[volatileDirty]
			b.Run(name, func(b *testing.B) {
				benchBoth(b, func(b *testing.B) benchCase {
					return dirtyMetaBench(b, dist, volatileDirty, 1024, directFileDevices)
				})
			})
		}
	}
}

// benchDevices returns a cache device holding lines 4 KiB lines and a core
// of coreBytes.
type benchDevices func(b *testing.B, lines int, coreBytes int64) (cache, core bdev.Device)

func mallocDevices(b *testing.B, lines int, coreBytes int64) (bdev.Device, bdev.Device) {
	cache, err := malloc.New("cache", uuid.Nil, 512, uint64(ocf.DeviceBytesFor(lines, benchBlock)/512))
	if err != nil {
		b.Fatal(err)
	}
	core, err := malloc.New("core", uuid.Nil, 512, uint64(coreBytes/512))
	if err != nil {
		b.Fatal(err)
	}
	return cache, core
}

func directFileDevices(b *testing.B, lines int, coreBytes int64) (bdev.Device, bdev.Device) {
	dir, err := os.MkdirTemp("/var/tmp", "blockcache-bench-")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	open := func(name string, size int64) bdev.Device {
		d, err := file.Open(name, filepath.Join(dir, name), file.Options{Direct: true, Create: true, Size: size, BlockSize: 512})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { d.Close() })
		return d
	}
	return open("cache", ocf.DeviceBytesFor(lines, benchBlock)), open("core", coreBytes)
}

// cpuTime is the CPU time the process has used (user and system), which,
// unlike ns/op, does not grow when other processes share the CPUs.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func dirtyMetaBench(b *testing.B, dist string, volatileDirty bool, lines int, devices benchDevices) benchCase {
	cacheDev, coreDev := devices(b, lines, 4*int64(lines)*benchBlock)
	mc := newMetaCounter(cacheDev)
	mc.countingEnabled.Store(true)
	nop := ocf.DefaultCleaningParams()
	nop.Kind = ocf.CleanNOP
	c, err := ocf.New(mc, ocf.Config{Mode: ocf.ModeWB, VolatileDirtyMetadata: volatileDirty, Cleaning: &nop})
	if err != nil {
		b.Fatal(err)
	}
	co, err := c.AddCore(ocf.CoreConfig{Device: coreDev, Volume: bdev.Info{Name: "vol"}})
	if err != nil {
		b.Fatal(err)
	}
	if err := co.SetSeqCutoff(seqCutoffPolicy(ocf.SeqCutoffNever)); err != nil {
		b.Fatal(err)
	}
	blocks := uint64(4 * lines)
	// Fill the cache with dirty data first: the steady state, every miss
	// evicting.
	buf := make([]byte, benchBlock)
	for i := range uint64(lines) {
		if err := co.WriteAt(buf, int64(i*4)*benchBlock, false); err != nil {
			b.Fatal(err)
		}
	}
	co.ResetStats()
	start := mc.metaWrites.Load()
	cpuStart := cpuTime(b)
	var seeds atomic.Uint64
	newOp := func() func() {
		seed := seeds.Add(1)
		rng := rand.New(rand.NewPCG(seed, 0xd1a7))
		next := func() uint64 { return rng.Uint64N(blocks) }
		if dist == "zipf" {
			z := rand.NewZipf(rng, 1.1, 1, blocks-1)
			// Spread the hot blocks over the core, not at its start.
			next = func() uint64 { return (z.Uint64() * 0x9e3779b97f4a7c15) % blocks }
		}
		p := make([]byte, benchBlock)
		return func() {
			if err := co.WriteAt(p, int64(next())*benchBlock, false); err != nil {
				b.Error(err)
			}
		}
	}
	done := func(b *testing.B) {
		r := co.Stats().Requests
		if r.WrTotal == 0 {
			b.Fatal("no writes")
		}
		b.ReportMetric(float64(mc.metaWrites.Load()-start)/float64(r.WrTotal), "metaw/op")
		b.ReportMetric(float64(cpuTime(b)-cpuStart)/float64(r.WrTotal), "cpu-ns/op")
		b.ReportMetric(100*float64(r.WrHits)/float64(r.WrTotal), "hit%")
		if r.WrPT != 0 {
			b.ReportMetric(100*float64(r.WrPT)/float64(r.WrTotal), "pt%")
		}
	}
	return benchCase{newOp: newOp, done: done}
}
