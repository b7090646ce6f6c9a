package ocf_test

import (
	"bytes"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"blockcache/internal/bdev"
	"blockcache/internal/bdev/bdevtest"
	"blockcache/internal/bdev/crashdev"
	"blockcache/internal/ocf"
	"blockcache/internal/ocf/metadata"
	"blockcache/internal/ocf/ocftest"
)

// metaCounter counts the writes a cache device gets below dataOffset (the
// superblocks and entry sectors) and its flushes.
type metaCounter struct {
	bdev.Device
	dataOffset      int64
	metaWrites      atomic.Int64
	metaFUA         atomic.Int64
	flushes         atomic.Int64
	countingEnabled atomic.Bool
}

func (m *metaCounter) WriteAt(p []byte, off int64, fua bool) error {
	if off < m.dataOffset && m.countingEnabled.Load() {
		m.metaWrites.Add(1)
		if fua {
			m.metaFUA.Add(1)
		}
	}
	return m.Device.WriteAt(p, off, fua)
}

func (m *metaCounter) Flush() error {
	if m.countingEnabled.Load() {
		m.flushes.Add(1)
	}
	return m.Device.Flush()
}

func newMetaCounter(d bdev.Device) *metaCounter {
	g := metadata.ComputeGeometry(d.Info().SizeBytes(), ocf.DefaultLineSize)
	return &metaCounter{Device: d, dataOffset: g.DataOffset}
}

// TestDirtyWriteDurableAtReturn: by default a write that makes sectors
// dirty is on the cache device, data and entry, when it returns: a power
// cut right after it (no flush, nothing unflushed kept) loads it dirty. With
// VolatileDirtyMetadata the same cut loses it (the core's old data is
// back), as a disk's volatile write cache would. Each cache records its
// choice: Load brings it back.
func TestDirtyWriteDurableAtReturn(t *testing.T) {
	for _, volatileDirty := range []bool{false, true} {
		name := map[bool]string{false: "default", true: "volatile-dirty"}[volatileDirty]
		t.Run(name, func(t *testing.T) {
			const lines, lineSize = 16, ocf.DefaultLineSize
			cacheDev, coreDev := crashDevice(t, "cache", ocf.DeviceBytesFor(lines, lineSize)), crashDevice(t, "core", 1<<20)
			c, err := ocf.New(cacheDev, ocf.Config{Mode: ocf.ModeWB, VolatileDirtyMetadata: volatileDirty})
			if err != nil {
				t.Fatal(err)
			}
			if c.VolatileDirtyMetadata() != volatileDirty {
				t.Fatalf("VolatileDirtyMetadata() = %v, want %v", c.VolatileDirtyMetadata(), volatileDirty)
			}
			co, err := c.AddCore(ocf.CoreConfig{Device: coreDev, Volume: bdev.Info{Name: "vol"}})
			if err != nil {
				t.Fatal(err)
			}
			if err := co.WriteAt(pattern(0x11, 4096), 4096, false); err != nil {
				t.Fatal(err)
			}
			if err := co.WriteAt(pattern(0x22, 1024), 4096+512, false); err != nil { // over dirty sectors
				t.Fatal(err)
			}
			want := pattern(0x11, 4096)
			copy(want[512:], pattern(0x22, 1024))

			cut := crashdev.CrashCloneConfig{UnflushedPercent: 0}
			cacheAfter, err := cacheDev.CrashClone(cut)
			if err != nil {
				t.Fatal(err)
			}
			coreAfter, err := coreDev.CrashClone(cut)
			if err != nil {
				t.Fatal(err)
			}
			c2, rep, err := ocf.Load(cacheAfter, ocf.Config{})
			if err != nil {
				t.Fatalf("load after the power cut: %v", err)
			}
			if c2.VolatileDirtyMetadata() != volatileDirty {
				t.Errorf("loaded cache: VolatileDirtyMetadata() = %v, want the recorded %v", c2.VolatileDirtyMetadata(), volatileDirty)
			}
			co2, err := c2.AddCore(ocf.CoreConfig{Device: coreAfter, Volume: co.Info()})
			if err != nil {
				t.Fatal(err)
			}
			got := make([]byte, 4096)
			if err := co2.ReadAt(got, 4096); err != nil {
				t.Fatal(err)
			}
			if volatileDirty {
				// Nothing was flushed: the entry never reached the device.
				if rep.DirtyLines != 0 || !bytes.Equal(got, make([]byte, 4096)) {
					t.Fatalf("volatile dirty metadata: %d dirty lines loaded, data %x...; want none and the core's zeroes", rep.DirtyLines, got[:8])
				}
				return
			}
			if rep.DirtyLines != 1 {
				t.Errorf("load report %+v, want 1 dirty line", rep)
			}
			// The rewrite of dirty sectors wrote no entry and was not
			// flushed: either version of those sectors may be back, the
			// first write's data everywhere else.
			first := pattern(0x11, 4096)
			if !bytes.Equal(got, want) && !bytes.Equal(got, first) {
				t.Fatalf("after the power cut line 1 holds %x..., want the acknowledged writes", got[:8])
			}
			if !bytes.Equal(got[:512], first[:512]) || !bytes.Equal(got[1536:], first[1536:]) {
				t.Fatalf("after the power cut the sectors only the first write wrote are not its data")
			}
		})
	}
}

// TestRewriteOfDirtyWritesNoMetadata: a write that makes sectors dirty
// writes its entry sector (once, with FUA, after a flush that makes its
// data durable); writes over sectors already dirty write no metadata and
// flush nothing.
func TestRewriteOfDirtyWritesNoMetadata(t *testing.T) {
	var mc *metaCounter
	env := ocftest.New(t, ocftest.Options{Lines: 16, Mode: ocf.ModeWB, WrapCache: func(d bdev.Device) bdev.Device {
		mc = newMetaCounter(d)
		return mc
	}})
	co := env.Cores[0]
	mc.countingEnabled.Store(true)
	volWrite(t, co, tagged('A', 0, 4096), 0, false)
	if w, f, fua := mc.metaWrites.Load(), mc.flushes.Load(), mc.metaFUA.Load(); w != 1 || f != 1 || fua != 1 {
		t.Fatalf("a write making a line dirty: %d metadata writes (%d FUA), %d flushes; want 1 FUA write and 1 flush", w, fua, f)
	}
	for i := range 100 {
		volWrite(t, co, tagged(byte('B'+i%20), 512, 2048), 512, false)
	}
	if w, f := mc.metaWrites.Load(), mc.flushes.Load(); w != 1 || f != 1 {
		t.Fatalf("100 writes over dirty sectors: %d metadata writes, %d flushes in all; want still 1 and 1", w, f)
	}
}

// TestGroupCommitSharesRounds: writers that make lines dirty while a sync
// round is in flight wait for it, do not return before their own entries
// are durable, and then share one round: 16 writers, two rounds in all
// (the one in flight, and one for all of them), not 17.
func TestGroupCommitSharesRounds(t *testing.T) {
	var gate *bdevtest.FlushGate
	var mc *metaCounter
	env := ocftest.New(t, ocftest.Options{Lines: 64, Mode: ocf.ModeWB, SeqCutoff: ocf.CutoffNever{}, WrapCache: func(d bdev.Device) bdev.Device {
		mc = newMetaCounter(d)
		gate = bdevtest.NewFlushGate(mc)
		return gate
	}})
	c, co := env.Cache, env.Cores[0]
	mc.countingEnabled.Store(true)

	gate.Arm()
	first := make(chan error, 1)
	go func() { first <- co.WriteAt(tagged('0', 0, 4096), 0, false) }()
	<-gate.Entered() // the first writer's round holds the device flush

	const writers = 16
	var returned atomic.Int64
	var wg sync.WaitGroup
	errs := make([]error, writers)
	for i := range writers {
		off := int64(i+1) * 4096
		wg.Go(func() {
			errs[i] = co.WriteAt(tagged(byte('a'+i), off, 4096), off, false)
			returned.Add(1)
		})
	}
	// Every writer has recorded its change (the lines are dirty) and waits.
	deadline := time.Now().Add(10 * time.Second)
	for c.Stats().Usage.Dirty != writers+1 {
		if time.Now().After(deadline) {
			t.Fatalf("writers did not mark their lines: usage %+v", c.Stats().Usage)
		}
		time.Sleep(time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond)
	if n := returned.Load(); n != 0 {
		t.Fatalf("%d writers returned while the round before theirs was still in flight", n)
	}
	gate.Release()
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("writer %d: %v", i, err)
		}
	}
	// Each round flushes, then writes the entry sectors it took in one
	// call (lines 0..16 share entry sector 0).
	if w, f := mc.metaWrites.Load(), mc.flushes.Load(); w != 2 || f != 2 {
		t.Fatalf("17 writers, 16 of them during a round: %d metadata writes and %d flushes; want 2 rounds (2 and 2)", w, f)
	}
	for i := range writers {
		off := int64(i+1) * 4096
		expectBytes(t, "after group commit", volRead(t, co, off, 4096), tagged(byte('a'+i), off, 4096))
	}
}

// TestVolatileDirtyParamChecked: the superblock slot recording the choice
// holds 0 or 1; anything else refuses the load, naming it.
func TestVolatileDirtyParamChecked(t *testing.T) {
	env := ocftest.New(t, ocftest.Options{Lines: 16, Mode: ocf.ModeWB})
	stopAll(t, env)
	img := make([]byte, env.CacheDev.Info().SizeBytes())
	if err := env.CacheDev.ReadAt(img, 0); err != nil {
		t.Fatal(err)
	}
	sb, _, err := metadata.Newest(img[:metadata.SuperblockCopyBytes], img[metadata.SuperblockCopyBytes:metadata.SuperblockArea], int64(len(img)))
	if err != nil {
		t.Fatal(err)
	}
	sb.Params[metadata.NumParams-1] = 7
	sb.Seq++
	b, err := sb.Encode()
	if err != nil {
		t.Fatal(err)
	}
	copy(img[int64(sb.Seq%2)*metadata.SuperblockCopyBytes:], b)
	_, _, err = ocf.Load(imageDevice(t, img), ocf.Config{})
	if !metadata.IsCorrupt(err) || !strings.Contains(err.Error(), "volatile dirty metadata) is 7") {
		t.Fatalf("load with the slot holding 7: %v, want a corruption error naming it", err)
	}
}

// TestReplacingDirtyDataDurableAtReturn: by default a write or discard
// that replaces dirty data (written through to the core, around the cache,
// or discarded) returns only once the core holds it durably and the entry
// saying the cache's copy is gone is on the device: neither a process kill
// nor a power cut right after it brings the older dirty data back.
func TestReplacingDirtyDataDurableAtReturn(t *testing.T) {
	type op struct {
		name string
		mode ocf.Mode
		do   func(co *ocf.Core) error
		want []byte
	}
	newData := pattern(0x77, 4096)
	write := func(co *ocf.Core) error { return co.WriteAt(newData, 0, false) }
	ops := []op{
		{"wt write", ocf.ModeWT, write, newData},
		{"wa write", ocf.ModeWA, write, newData},
		{"wi write", ocf.ModeWI, write, newData},
		{"pt write", ocf.ModePT, write, newData},
		{"wb discard", ocf.ModeWB, func(co *ocf.Core) error { return co.Discard(0, 4096) }, make([]byte, 4096)},
	}
	for _, o := range ops {
		for _, crash := range []string{"kill", "power cut"} {
			t.Run(o.name+"/"+crash, func(t *testing.T) {
				cacheDev, coreDev := crashDevice(t, "cache", ocf.DeviceBytesFor(16, ocf.DefaultLineSize)), crashDevice(t, "core", 1<<20)
				c, err := ocf.New(cacheDev, ocf.Config{Mode: ocf.ModeWB})
				if err != nil {
					t.Fatal(err)
				}
				co, err := c.AddCore(ocf.CoreConfig{Device: coreDev, Volume: bdev.Info{Name: "vol"}})
				if err != nil {
					t.Fatal(err)
				}
				if err := co.WriteAt(pattern(0x11, 4096), 0, false); err != nil { // dirty, durable
					t.Fatal(err)
				}
				if err := c.SetMode(o.mode, false); err != nil {
					t.Fatal(err)
				}
				if err := o.do(co); err != nil {
					t.Fatal(err)
				}
				after := func(d *crashdev.Device) *crashdev.Device {
					if crash == "kill" {
						return killClone(t, d)
					}
					cl, err := d.CrashClone(crashdev.CrashCloneConfig{UnflushedPercent: 0})
					if err != nil {
						t.Fatal(err)
					}
					return cl
				}
				c2, rep, err := ocf.Load(after(cacheDev), ocf.Config{})
				if err != nil {
					t.Fatal(err)
				}
				co2, err := c2.AddCore(ocf.CoreConfig{Device: after(coreDev), Volume: co.Info()})
				if err != nil {
					t.Fatal(err)
				}
				got := make([]byte, 4096)
				if err := co2.ReadAt(got, 0); err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, o.want) {
					t.Fatalf("after a %s right after the %s (load %+v): %x..., want %x...", crash, o.name, rep, got[:8], o.want[:8])
				}
			})
		}
	}
}
