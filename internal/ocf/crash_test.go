package ocf_test

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"
	"pgregory.net/rapid"

	"blockcache/internal/bdev"
	"blockcache/internal/bdev/crashdev"
	"blockcache/internal/bdev/malloc"
	"blockcache/internal/ocf"
	"blockcache/internal/testutil"
)

// TestCrashConsistency cuts power, or kills the process, at random points
// of random operation sequences, in every mode and line size, with and
// without volatile dirty metadata, and checks durability.md's contract on
// what the cache loads from the devices left behind.
//
// The model keeps, per sector, the write that is durable and every write
// acknowledged since. Durable is the last write acknowledged with FUA or
// before a completed flush (0 = the initial zeroes); by default also the
// last acknowledged write that changed whether the sector is dirty (made
// it dirty, or replaced dirty data on the core): its entry was on the
// device before it returned. After a power cut each sector must read back
// one of those, whole (each sector's content names its write, core and
// sector, so torn or misplaced data is caught), and read the same twice.
// After a process kill (every completed device write survives, nothing
// else) the default keeps every acknowledged write: each sector reads back
// its latest. Then the sequence goes on from the recovered state and may
// crash again.
func TestCrashConsistency(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		lineSize := rapid.SampledFrom([]int64{4 << 10, 8 << 10, 16 << 10, 32 << 10, 64 << 10}).Draw(rt, "lineSize")
		mode := rapid.SampledFrom(ocf.Modes()).Draw(rt, "mode")
		lines := rapid.IntRange(2, 10).Draw(rt, "lines")
		nCores := rapid.IntRange(1, 2).Draw(rt, "cores")
		coreBytes := lineSize * int64(rapid.IntRange(2, 12).Draw(rt, "coreLines"))
		seed := rapid.Uint64().Draw(rt, "seed")
		volatileDirty := rapid.Bool().Draw(rt, "volatileDirty")
		w := newCrashWorld(rt, lineSize, mode, lines, nCores, coreBytes, seed, volatileDirty)
		for crash := 0; crash < 2; crash++ {
			steps := rapid.IntRange(1, 40).Draw(rt, fmt.Sprintf("steps%d", crash))
			for range steps {
				w.step(rt)
			}
			w.crashAndRecover(rt)
		}
	})
}

type crashWorld struct {
	lineSize      int64
	coreBytes     int64
	rng           *rand.Rand
	volatileDirty bool // ocf.Config.VolatileDirtyMetadata

	cacheDev *crashdev.Device
	coreDevs []*crashdev.Device
	cache    *ocf.Cache
	cores    []*ocf.Core

	nextWrite uint64
	// Per core, per sector: the durable write and the writes acknowledged
	// since (possible after a crash). cur is the latest acknowledged.
	durable  [][]uint64
	possible [][][]uint64
	cur      [][]uint64
}

// crashDevice returns a crash-simulating device over a fresh RAM device of
// bytes bytes.
func crashDevice(t interface{ Fatal(...any) }, name string, bytes int64) *crashdev.Device {
	m, err := malloc.New(name, uuid.Nil, 512, uint64(bytes/512))
	if err != nil {
		t.Fatal(err)
	}
	return crashdev.New(m)
}

func newCrashWorld(t *rapid.T, lineSize int64, mode ocf.Mode, lines, nCores int, coreBytes int64, seed uint64, volatileDirty bool) *crashWorld {
	w := &crashWorld{lineSize: lineSize, coreBytes: coreBytes, rng: rand.New(rand.NewPCG(seed, seed^0x9e37)), volatileDirty: volatileDirty}
	w.cacheDev = crashDevice(t, "cache", ocf.DeviceBytesFor(lines, lineSize))
	c, err := ocf.New(w.cacheDev, ocf.Config{LineSize: lineSize, Mode: mode, VolatileDirtyMetadata: volatileDirty})
	if err != nil {
		t.Fatal(err)
	}
	w.cache = c
	sectors := int(coreBytes / 512)
	for i := range nCores {
		dev := crashDevice(t, fmt.Sprintf("core%d", i), coreBytes)
		co, err := c.AddCore(ocf.CoreConfig{ID: ocf.CoreID(i), Device: dev, Volume: bdev.Info{Name: fmt.Sprintf("vol%d", i)}})
		if err != nil {
			t.Fatal(err)
		}
		w.coreDevs = append(w.coreDevs, dev)
		w.cores = append(w.cores, co)
		w.durable = append(w.durable, make([]uint64, sectors))
		w.cur = append(w.cur, make([]uint64, sectors))
		p := make([][]uint64, sectors)
		for s := range p {
			p[s] = []uint64{0}
		}
		w.possible = append(w.possible, p)
	}
	return w
}

// sectorContent is what write id puts in sector s of core: its stamp
// (testutil.Stamp). Write 0 is zeroes.
func sectorContent(id uint64, core, s int) []byte {
	b := make([]byte, testutil.SectorSize)
	testutil.Stamp{Space: uint32(core), Sector: uint64(s), Write: id}.Put(b)
	return b
}

// decodeSector names the write a sector's content came from, or fails.
func decodeSector(b []byte, core, s int) (uint64, error) {
	st, err := testutil.Check(b, 0, uint32(core), uint64(s))
	if err != nil {
		return 0, fmt.Errorf("core %d sector %d: content is no whole write of this sector (torn, misplaced or garbage): %w", core, s, err)
	}
	return st.Write, nil
}

func (w *crashWorld) span(t *rapid.T) (core, s0, n int) {
	core = rapid.IntRange(0, len(w.cores)-1).Draw(t, "core")
	sectors := int(w.coreBytes / 512)
	s0 = rapid.IntRange(0, sectors-1).Draw(t, "sector")
	n = rapid.IntRange(1, min(sectors-s0, int(2*w.lineSize/512))).Draw(t, "n")
	return
}

func (w *crashWorld) step(t *rapid.T) {
	switch op := rapid.IntRange(0, 10).Draw(t, "op"); op {
	case 0, 1, 2, 3: // write
		core, s0, n := w.span(t)
		fua := rapid.Bool().Draw(t, "fua")
		w.nextWrite++
		id := w.nextWrite
		buf := make([]byte, 0, n*512)
		for s := s0; s < s0+n; s++ {
			buf = append(buf, sectorContent(id, core, s)...)
		}
		before := w.cores[core].SectorStates(int64(s0)*512, int64(n)*512)
		if err := w.cores[core].WriteAt(buf, int64(s0)*512, fua); err != nil {
			t.Fatalf("write core %d sectors %d+%d: %v", core, s0, n, err)
		}
		after := w.cores[core].SectorStates(int64(s0)*512, int64(n)*512)
		for k, s := 0, s0; s < s0+n; k, s = k+1, s+1 {
			w.acknowledged(core, s, id, fua || w.dirtyChanged(before[k], after[k]))
		}
	case 4, 5: // read: the latest acknowledged write of every sector
		core, s0, n := w.span(t)
		buf := make([]byte, n*512)
		if err := w.cores[core].ReadAt(buf, int64(s0)*512); err != nil {
			t.Fatalf("read: %v", err)
		}
		for k := range n {
			got, err := decodeSector(buf[k*512:(k+1)*512], core, s0+k)
			if err != nil || got != w.cur[core][s0+k] {
				t.Fatalf("read core %d sector %d: write %d (%v), want %d", core, s0+k, got, err, w.cur[core][s0+k])
			}
		}
	case 6: // flush: everything acknowledged on the core becomes durable
		core := rapid.IntRange(0, len(w.cores)-1).Draw(t, "core")
		if err := w.cores[core].Flush(); err != nil {
			t.Fatalf("flush: %v", err)
		}
		for s, id := range w.cur[core] {
			w.durable[core][s], w.possible[core][s] = id, []uint64{id}
		}
	case 7:
		if err := w.cache.SetMode(rapid.SampledFrom(ocf.Modes()).Draw(t, "mode"), rapid.Bool().Draw(t, "flushFirst")); err != nil {
			t.Fatalf("set mode: %v", err)
		}
	case 8:
		if err := w.cache.FlushDirty(nil, nil); err != nil {
			t.Fatalf("flush dirty: %v", err)
		}
	case 10: // write-back under pressure: alru's dirty-ratio target, in parallel
		p := ocf.DefaultCleaningParams()
		p.ALRU.StalenessTime, p.ALRU.ActivityThreshold = time.Second, 0
		p.ALRU.MaxDirtyRatio = uint32(rapid.SampledFrom([]int{0, 50}).Draw(t, "maxDirtyRatio"))
		p.MaxInflight = uint32(rapid.IntRange(1, 8).Draw(t, "maxInflight"))
		if err := w.cache.SetCleaning(p); err != nil {
			t.Fatalf("set cleaning: %v", err)
		}
		if _, _, err := w.cache.CleanStep(time.Now().Add(time.Hour)); err != nil {
			t.Fatalf("clean step: %v", err)
		}
	case 9: // discard: reads back zeroes, durable after a flush (or as a write)
		core, s0, n := w.span(t)
		before := w.cores[core].SectorStates(int64(s0)*512, int64(n)*512)
		if err := w.cores[core].Discard(int64(s0)*512, int64(n)*512); err != nil {
			t.Fatalf("discard: %v", err)
		}
		after := w.cores[core].SectorStates(int64(s0)*512, int64(n)*512)
		for k, s := 0, s0; s < s0+n; k, s = k+1, s+1 {
			w.acknowledged(core, s, 0, w.dirtyChanged(before[k], after[k]))
		}
	}
}

// dirtyChanged reports whether an acknowledged write that found a sector
// in state before and left it in after is durable by the dirty-state rule:
// by default, unless the metadata is volatile, a write that made the sector
// dirty, or replaced its dirty data (on the core), returned only after the
// entry saying so was on the cache device, after the data.
func (w *crashWorld) dirtyChanged(before, after ocf.SectorState) bool {
	return !w.volatileDirty && before.Dirty != after.Dirty
}

// acknowledged records that write id of sector s of core was acknowledged,
// durable or not.
func (w *crashWorld) acknowledged(core, s int, id uint64, durable bool) {
	w.cur[core][s] = id
	if durable {
		w.durable[core][s], w.possible[core][s] = id, []uint64{id}
	} else {
		w.possible[core][s] = append(w.possible[core][s], id)
	}
}

// crashAndRecover kills the process (-1) or cuts power keeping 0, 50 or
// 100% of the unflushed sectors, loads what the devices hold and checks it.
func (w *crashWorld) crashAndRecover(t *rapid.T) {
	pct := rapid.SampledFrom([]int{-1, 0, 50, 100}).Draw(t, "unflushedPercent")
	kill := pct < 0
	clone := func(d *crashdev.Device) *crashdev.Device {
		if kill {
			return killClone(t, d)
		}
		c, err := d.CrashClone(crashdev.CrashCloneConfig{UnflushedPercent: pct, RNG: w.rng})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	cacheDev := clone(w.cacheDev)
	var coreDevs []*crashdev.Device
	for _, d := range w.coreDevs {
		coreDevs = append(coreDevs, clone(d))
	}
	c, rep, err := ocf.Load(cacheDev, ocf.Config{})
	if err != nil {
		t.Fatalf("load after crash: %v", err)
	}
	var cores []*ocf.Core
	for i, d := range coreDevs {
		co, err := c.AddCore(ocf.CoreConfig{ID: ocf.CoreID(i), Device: d, Volume: w.cores[i].Info()})
		if err != nil {
			t.Fatalf("attach core %d after crash: %v", i, err)
		}
		cores = append(cores, co)
	}
	if errs := c.Check(); len(errs) > 0 {
		t.Fatalf("check after load (%+v): %v", rep, errs)
	}
	if c.VolatileDirtyMetadata() != w.volatileDirty {
		t.Fatalf("loaded cache: VolatileDirtyMetadata %v, recorded %v", c.VolatileDirtyMetadata(), w.volatileDirty)
	}
	for core, co := range cores {
		img := make([]byte, w.coreBytes)
		if err := co.ReadAt(img, 0); err != nil {
			t.Fatalf("read after crash: %v", err)
		}
		again := make([]byte, w.coreBytes)
		if err := co.ReadAt(again, 0); err != nil || !bytes.Equal(img, again) {
			t.Fatalf("core %d reads differently twice after recovery (%v)", core, err)
		}
		for s := range w.cur[core] {
			got, err := decodeSector(img[s*512:(s+1)*512], core, s)
			if err != nil {
				t.Fatalf("after crash (%+v): %v", rep, err)
			}
			if kill && !w.volatileDirty && got != w.cur[core][s] {
				t.Fatalf("after a process kill (%+v): core %d sector %d holds write %d, not its last acknowledged write %d (durable %d, acknowledged since %v)",
					rep, core, s, got, w.cur[core][s], w.durable[core][s], w.possible[core][s])
			}
			if !slices.Contains(w.possible[core][s], got) {
				t.Fatalf("after crash (%+v, kill %v): core %d sector %d holds write %d; durable is %d, acknowledged since %v",
					rep, kill, core, s, got, w.durable[core][s], w.possible[core][s])
			}
			w.cur[core][s], w.durable[core][s], w.possible[core][s] = got, got, []uint64{got}
		}
	}
	w.cacheDev, w.coreDevs, w.cache, w.cores = cacheDev, coreDevs, c, cores
}

// killClone returns what a process kill leaves of d: every write it
// completed, flushed or not (the operating system still has them), and
// nothing else; a fresh device, as CrashClone's.
func killClone(t interface{ Fatal(...any) }, d *crashdev.Device) *crashdev.Device {
	info := d.Info()
	m, err := malloc.New(info.Name, info.UUID, info.BlockSize, info.NumBlocks)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, info.SizeBytes())
	if err := d.ReadAt(buf, 0); err != nil {
		t.Fatal(err)
	}
	if err := m.WriteAt(buf, 0, false); err != nil {
		t.Fatal(err)
	}
	return crashdev.New(m)
}
