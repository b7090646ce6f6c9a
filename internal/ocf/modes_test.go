package ocf_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"

	"blockcache/internal/bdev"
	"blockcache/internal/ocf"
	"blockcache/internal/ocf/ocftest"
	"blockcache/internal/testutil"
)

// These tests pin engine.md's mode table cell by cell, and the statistics
// rules that go with it, observing the engine only from outside: the data a
// read returns, the core device's contents read behind the cache's back
// (env.CoreDevs), and the statistics.

const sectorBytes = 512

// tagged returns n bytes of data for the volume range at off: every byte is
// tag except the first 8 of each sector, which hold the sector's number, so
// that data landing in the wrong place is caught too.
func tagged(tag byte, off int64, n int) []byte {
	p := bytes.Repeat([]byte{tag}, n)
	for i := 0; i+8 <= n; i += sectorBytes {
		binary.LittleEndian.PutUint64(p[i:], uint64(off+int64(i))/sectorBytes)
	}
	return p
}

// diffAt describes the first difference between got and want.
func diffAt(got, want []byte) string {
	if len(got) != len(want) {
		return fmt.Sprintf("length %d, want %d", len(got), len(want))
	}
	if i := testutil.FirstDiff(got, want); i >= 0 {
		return fmt.Sprintf("first difference at byte %d (sector %d): got %#02x want %#02x", i, i/sectorBytes, got[i], want[i])
	}
	return "equal"
}

func expectBytes(t testing.TB, what string, got, want []byte) {
	t.Helper()
	if !bytes.Equal(got, want) {
		t.Fatalf("%s: %s", what, diffAt(got, want))
	}
}

func volRead(t testing.TB, co *ocf.Core, off int64, n int) []byte {
	t.Helper()
	p := make([]byte, n)
	if err := co.ReadAt(p, off); err != nil {
		t.Fatalf("read %s at %d len %d: %v", co.Info().Name, off, n, err)
	}
	return p
}

func volWrite(t testing.TB, co *ocf.Core, p []byte, off int64, fua bool) {
	t.Helper()
	if err := co.WriteAt(p, off, fua); err != nil {
		t.Fatalf("write %s at %d len %d: %v", co.Info().Name, off, len(p), err)
	}
}

func devRead(t testing.TB, d bdev.Device, off int64, n int) []byte {
	t.Helper()
	p := make([]byte, n)
	if err := d.ReadAt(p, off); err != nil {
		t.Fatalf("read device %s at %d: %v", d.Info().Name, off, err)
	}
	return p
}

func devWrite(t testing.TB, d bdev.Device, p []byte, off int64) {
	t.Helper()
	if err := d.WriteAt(p, off, false); err != nil {
		t.Fatalf("write device %s at %d: %v", d.Info().Name, off, err)
	}
}

func setMode(t testing.TB, c *ocf.Cache, m ocf.Mode, flush bool) {
	t.Helper()
	if err := c.SetMode(m, flush); err != nil {
		t.Fatalf("set mode %s: %v", m, err)
	}
}

// fillCore writes tag over the whole of core i behind the cache's back.
func fillCore(t testing.TB, env *ocftest.Env, i int, tag byte) {
	t.Helper()
	size := env.CoreDevs[i].Info().SizeBytes()
	devWrite(t, env.CoreDevs[i], tagged(tag, 0, int(size)), 0)
}

// reqStats builds the RequestStats a set of request counts implies, with the
// totals computed as engine.md defines them.
func reqStats(rdHit, rdPartial, rdFull, rdPT, wrHit, wrPartial, wrFull, wrPT uint64) ocf.RequestStats {
	r := ocf.RequestStats{
		RdHits: rdHit, RdPartialMisses: rdPartial, RdFullMisses: rdFull, RdPT: rdPT,
		WrHits: wrHit, WrPartialMisses: wrPartial, WrFullMisses: wrFull, WrPT: wrPT,
	}
	r.RdTotal = rdHit + rdPartial + rdFull
	r.WrTotal = wrHit + wrPartial + wrFull
	r.Serviced = r.RdTotal + r.WrTotal
	r.Total = r.Serviced + rdPT + wrPT
	return r
}

var (
	rdHit     = reqStats(1, 0, 0, 0, 0, 0, 0, 0)
	rdPartial = reqStats(0, 1, 0, 0, 0, 0, 0, 0)
	rdFull    = reqStats(0, 0, 1, 0, 0, 0, 0, 0)
	rdPT      = reqStats(0, 0, 0, 1, 0, 0, 0, 0)
	wrHit     = reqStats(0, 0, 0, 0, 1, 0, 0, 0)
	wrPartial = reqStats(0, 0, 0, 0, 0, 1, 0, 0)
	wrFull    = reqStats(0, 0, 0, 0, 0, 0, 1, 0)
	wrPT      = reqStats(0, 0, 0, 0, 0, 0, 0, 1)
)

// readStatsFor is how a read of lines cache lines counts when hitLines of
// them hit: a hit, a partial miss or a full miss.
func readStatsFor(hitLines, lines int) ocf.RequestStats {
	switch hitLines {
	case lines:
		return rdHit
	case 0:
		return rdFull
	}
	return rdPartial
}

// traffic is the expected block traffic of one request, in units of the
// request's size in 4 KiB blocks: 0 or 1, or -1 for "not pinned" (the engine
// may or may not move those blocks).
type traffic struct{ coreRd, coreWr, cacheRd, cacheWr int }

func checkTraffic(t testing.TB, what string, b ocf.BlockStats, want traffic, n4 uint64) {
	t.Helper()
	for _, f := range []struct {
		name string
		got  uint64
		want int
	}{
		{"core_volume_rd", b.CoreRd, want.coreRd},
		{"core_volume_wr", b.CoreWr, want.coreWr},
		{"cache_volume_rd", b.CacheRd, want.cacheRd},
		{"cache_volume_wr", b.CacheWr, want.cacheWr},
	} {
		if f.want >= 0 && f.got != uint64(f.want)*n4 {
			t.Errorf("%s: blocks.%s = %d, want %d", what, f.name, f.got, uint64(f.want)*n4)
		}
	}
	if b.CoreTotal != b.CoreRd+b.CoreWr || b.CacheTotal != b.CacheRd+b.CacheWr || b.VolumeTotal != b.VolumeRd+b.VolumeWr {
		t.Errorf("%s: block totals do not add up: %+v", what, b)
	}
}

func checkUsage(t testing.TB, what string, co *ocf.Core, c *ocf.Cache, occLines, dirtyLines uint64) {
	t.Helper()
	per4K := uint64(c.LineSize() / 4096)
	for _, s := range []struct {
		who string
		u   ocf.UsageStats
	}{{"core", co.Stats().Usage}, {"cache", c.Stats().Usage}} {
		want := ocf.UsageStats{
			Occupancy: occLines * per4K,
			Dirty:     dirtyLines * per4K,
			Clean:     (occLines - dirtyLines) * per4K,
			Free:      (uint64(c.NumLines()) - occLines) * per4K,
		}
		if s.u != want {
			t.Errorf("%s: %s usage %+v, want %+v", what, s.who, s.u, want)
		}
	}
}

var testLineSizes = []int64{4 << 10, 64 << 10}

// modeEnv builds a one-core cache whose core is filled with 'A'; the tests
// act on core line 1 (a whole line), n4 is its size in 4 KiB blocks.
func modeEnv(t *testing.T, ls int64) (env *ocftest.Env, off int64, n int, n4 uint64) {
	env = ocftest.New(t, ocftest.Options{Lines: 8, LineSize: ls, Mode: ocf.ModeWT, CoreBytes: 16 * ls})
	fillCore(t, env, 0, 'A')
	return env, ls, int(ls), uint64(ls / 4096)
}

// readClass reads line off again in the current mode and reports how the
// request was counted.
func readClass(t *testing.T, co *ocf.Core, off int64, n int) string {
	t.Helper()
	co.ResetStats()
	volRead(t, co, off, n)
	switch r := co.Stats().Requests; r {
	case rdHit:
		return "hit"
	case rdFull:
		return "full"
	case rdPartial:
		return "partial"
	case rdPT:
		return "pt"
	default:
		t.Fatalf("one read counted as %+v", r)
		return ""
	}
}

// TestModeReadHitClean pins the "read hit" column for a clean cached line.
// The core is changed behind the cache's back after the line was cached, so
// the data shows where the read was served from: 'A' is the cache, 'B' the
// core.
func TestModeReadHitClean(t *testing.T) {
	for _, tc := range []struct {
		mode   ocf.Mode
		data   byte
		req    ocf.RequestStats
		tr     traffic
		second string // how the next read of the line counts
	}{
		{ocf.ModeWT, 'A', rdHit, traffic{0, 0, 1, 0}, "hit"},
		{ocf.ModeWB, 'A', rdHit, traffic{0, 0, 1, 0}, "hit"},
		{ocf.ModeWA, 'A', rdHit, traffic{0, 0, 1, 0}, "hit"},
		{ocf.ModeWI, 'A', rdHit, traffic{0, 0, 1, 0}, "hit"},
		// pt: from core; counted in total only.
		{ocf.ModePT, 'B', rdPT, traffic{1, 0, 0, 0}, "pt"},
		// wo: every sector valid, so from cache and a hit, as OCF.
		{ocf.ModeWO, 'A', rdHit, traffic{0, 0, 1, 0}, "hit"},
	} {
		for _, ls := range testLineSizes {
			t.Run(fmt.Sprintf("%s/%dK", tc.mode, ls>>10), func(t *testing.T) {
				env, off, n, n4 := modeEnv(t, ls)
				c, co := env.Cache, env.Cores[0]
				volRead(t, co, off, n) // wt: inserts the line
				devWrite(t, env.CoreDevs[0], tagged('B', off, n), off)
				setMode(t, c, tc.mode, false)
				co.ResetStats()

				expectBytes(t, "read", volRead(t, co, off, n), tagged(tc.data, off, n))
				s := co.Stats()
				if s.Requests != tc.req {
					t.Errorf("requests %+v, want %+v", s.Requests, tc.req)
				}
				checkTraffic(t, "read", s.Blocks, tc.tr, n4)
				if s.Blocks.VolumeRd != n4 || s.Blocks.VolumeWr != 0 {
					t.Errorf("volume traffic %+v, want %d blocks read", s.Blocks, n4)
				}
				checkUsage(t, "after read", co, c, 1, 0)
				if got := readClass(t, co, off, n); got != tc.second {
					t.Errorf("second read counted as %s, want %s", got, tc.second)
				}
			})
		}
	}
}

// TestModeReadHitDirty pins the "read hit" column for a dirty line (written in
// wb, mode changed without flushing): every mode returns the dirty data,
// never the core's stale copy.
func TestModeReadHitDirty(t *testing.T) {
	for _, tc := range []struct {
		mode ocf.Mode
		req  ocf.RequestStats
		tr   traffic
	}{
		{ocf.ModeWT, rdHit, traffic{0, 0, 1, 0}},
		{ocf.ModeWB, rdHit, traffic{0, 0, 1, 0}},
		{ocf.ModeWA, rdHit, traffic{0, 0, 1, 0}},
		{ocf.ModeWI, rdHit, traffic{0, 0, 1, 0}},
		// pt: core, except dirty sectors from cache (reading the core for
		// sectors about to be overlaid is allowed, so core_rd is not pinned).
		{ocf.ModePT, rdPT, traffic{-1, 0, 1, 0}},
		{ocf.ModeWO, rdHit, traffic{0, 0, 1, 0}},
	} {
		for _, ls := range testLineSizes {
			t.Run(fmt.Sprintf("%s/%dK", tc.mode, ls>>10), func(t *testing.T) {
				env, off, n, n4 := modeEnv(t, ls)
				c, co := env.Cache, env.Cores[0]
				setMode(t, c, ocf.ModeWB, false)
				volWrite(t, co, tagged('D', off, n), off, false)
				setMode(t, c, tc.mode, false)
				co.ResetStats()

				expectBytes(t, "read of dirty line", volRead(t, co, off, n), tagged('D', off, n))
				s := co.Stats()
				if s.Requests != tc.req {
					t.Errorf("requests %+v, want %+v", s.Requests, tc.req)
				}
				checkTraffic(t, "read", s.Blocks, tc.tr, n4)
				checkUsage(t, "after read", co, c, 1, 1)
				expectBytes(t, "core device (dirty data must not be written by a read)", devRead(t, env.CoreDevs[0], off, n), tagged('A', off, n))
			})
		}
	}
}

// TestModeReadMiss pins the "read miss" column.
func TestModeReadMiss(t *testing.T) {
	for _, tc := range []struct {
		mode   ocf.Mode
		req    ocf.RequestStats
		tr     traffic
		occ    uint64
		second string
	}{
		{ocf.ModeWT, rdFull, traffic{1, 0, 0, 1}, 1, "hit"},
		{ocf.ModeWB, rdFull, traffic{1, 0, 0, 1}, 1, "hit"},
		{ocf.ModeWA, rdFull, traffic{1, 0, 0, 1}, 1, "hit"},
		{ocf.ModeWI, rdFull, traffic{1, 0, 0, 1}, 1, "hit"},
		{ocf.ModePT, rdPT, traffic{1, 0, 0, 0}, 0, "pt"},
		// wo: counted as a full miss and never inserted.
		{ocf.ModeWO, rdFull, traffic{1, 0, 0, 0}, 0, "full"},
	} {
		for _, ls := range testLineSizes {
			t.Run(fmt.Sprintf("%s/%dK", tc.mode, ls>>10), func(t *testing.T) {
				env, off, n, n4 := modeEnv(t, ls)
				c, co := env.Cache, env.Cores[0]
				setMode(t, c, tc.mode, false)

				expectBytes(t, "read", volRead(t, co, off, n), tagged('A', off, n))
				s := co.Stats()
				if s.Requests != tc.req {
					t.Errorf("requests %+v, want %+v", s.Requests, tc.req)
				}
				checkTraffic(t, "read", s.Blocks, tc.tr, n4)
				checkUsage(t, "after read", co, c, tc.occ, 0)
				if got := readClass(t, co, off, n); got != tc.second {
					t.Errorf("second read counted as %s, want %s", got, tc.second)
				}
				expectBytes(t, "second read", volRead(t, co, off, n), tagged('A', off, n))
			})
		}
	}
}

// writeCell is one expected outcome of a write.
type writeCell struct {
	mode       ocf.Mode
	core       byte // the core device's contents after the write
	req        ocf.RequestStats
	tr         traffic
	occ, dirty uint64 // lines
	cached     bool   // the written data is in the cache afterwards
}

// writeSetup prepares line off (n bytes) of a write cell's cache before
// the write.
type writeSetup func(t *testing.T, env *ocftest.Env, off int64, n int)

// runWriteCells runs runWriteCell for every cell, line size and FUA
// setting in fuas, each as a subtest named mode/line size/fua.
func runWriteCells(t *testing.T, cells []writeCell, fuas []bool, setup writeSetup) {
	for _, tc := range cells {
		for _, ls := range testLineSizes {
			for _, fua := range fuas {
				t.Run(fmt.Sprintf("%s/%dK/fua=%v", tc.mode, ls>>10, fua), func(t *testing.T) {
					runWriteCell(t, ls, tc, fua, setup)
				})
			}
		}
	}
}

// runWriteCell writes 'D' over line off (fua as given) after setup and checks
// the cell: statistics, usage, the core device, and then, on two copies of
// the scenario (a read can insert, so each check needs a cache of its own):
// the data read back in the mode, and whether the cache holds the data
// (found by changing the core behind the cache's back and reading in wt).
func runWriteCell(t *testing.T, ls int64, tc writeCell, fua bool, setup writeSetup) {
	for _, check := range []string{"read back", "cache content"} {
		env, off, n, n4 := modeEnv(t, ls)
		c, co := env.Cache, env.Cores[0]
		setup(t, env, off, n)
		setMode(t, c, tc.mode, false)
		co.ResetStats()

		want := tagged('D', off, n)
		volWrite(t, co, want, off, fua)
		s := co.Stats()
		if s.Requests != tc.req {
			t.Errorf("requests %+v, want %+v", s.Requests, tc.req)
		}
		checkTraffic(t, "write", s.Blocks, tc.tr, n4)
		if s.Blocks.VolumeWr != n4 || s.Blocks.VolumeRd != 0 {
			t.Errorf("volume traffic %+v, want %d blocks written", s.Blocks, n4)
		}
		checkUsage(t, "after write", co, c, tc.occ, tc.dirty)
		expectBytes(t, "core device", devRead(t, env.CoreDevs[0], off, n), tagged(tc.core, off, n))

		if check == "read back" {
			expectBytes(t, "read back in "+tc.mode.String(), volRead(t, co, off, n), want)
			continue
		}
		devWrite(t, env.CoreDevs[0], tagged('Z', off, n), off)
		setMode(t, c, ocf.ModeWT, false)
		wantCached := tagged('Z', off, n)
		if tc.cached {
			wantCached = want
		}
		expectBytes(t, "read in wt after changing the core behind the cache", volRead(t, co, off, n), wantCached)
		if tc.dirty > 0 {
			if err := c.FlushDirty(nil, nil); err != nil {
				t.Fatal(err)
			}
			expectBytes(t, "core device after FlushDirty", devRead(t, env.CoreDevs[0], off, n), want)
		}
	}
}

// writeHitCells is the "write hit" column, the same whether the line
// written was clean or dirty.
var writeHitCells = []writeCell{
	{ocf.ModeWT, 'D', wrHit, traffic{0, 1, 0, 1}, 1, 0, true},
	{ocf.ModeWB, 'A', wrHit, traffic{0, 0, 0, 1}, 1, 1, true},
	// wa: a full hit is written through (OCF's ocf_write_wa hands a
	// hit to ocf_write_wt, which counts it as a hit).
	{ocf.ModeWA, 'D', wrHit, traffic{0, 1, 0, 1}, 1, 0, true},
	// wi: core, cached sectors invalidated (the whole line here).
	{ocf.ModeWI, 'D', wrPT, traffic{0, 1, 0, 0}, 0, 0, false},
	{ocf.ModePT, 'D', wrPT, traffic{0, 1, 0, 0}, 0, 0, false},
	{ocf.ModeWO, 'A', wrHit, traffic{0, 0, 0, 1}, 1, 1, true},
}

// TestModeWriteHit pins the "write hit" column for a clean cached line.
func TestModeWriteHit(t *testing.T) {
	runWriteCells(t, writeHitCells, []bool{false, true}, func(t *testing.T, env *ocftest.Env, off int64, n int) {
		volRead(t, env.Cores[0], off, n) // wt read: caches the line clean
	})
}

// TestModeWriteHitDirty pins the "write hit" column when the line is dirty:
// pt and wi must drop the dirty sectors too (the core now has newer data),
// write-through modes leave the line clean.
func TestModeWriteHitDirty(t *testing.T) {
	runWriteCells(t, writeHitCells, []bool{false}, func(t *testing.T, env *ocftest.Env, off int64, n int) {
		setMode(t, env.Cache, ocf.ModeWB, false)
		volWrite(t, env.Cores[0], tagged('C', off, n), off, false)
	})
}

// TestModeWriteMiss pins the "write miss" column.
func TestModeWriteMiss(t *testing.T) {
	cells := []writeCell{
		{ocf.ModeWT, 'D', wrFull, traffic{0, 1, 0, 1}, 1, 0, true},
		{ocf.ModeWB, 'A', wrFull, traffic{0, 0, 0, 1}, 1, 1, true},
		// wa, wi: core only, not inserted, counted as pass-through.
		{ocf.ModeWA, 'D', wrPT, traffic{0, 1, 0, 0}, 0, 0, false},
		{ocf.ModeWI, 'D', wrPT, traffic{0, 1, 0, 0}, 0, 0, false},
		{ocf.ModePT, 'D', wrPT, traffic{0, 1, 0, 0}, 0, 0, false},
		{ocf.ModeWO, 'A', wrFull, traffic{0, 0, 0, 1}, 1, 1, true},
	}
	runWriteCells(t, cells, []bool{false, true}, func(*testing.T, *ocftest.Env, int64, int) {})
}

// TestPartialLineWriteNoRMW: a wb write of one 4 KiB block of a 64 KiB line
// writes only that block to the cache, reads nothing (no read-modify-write),
// and leaves the rest of the line invalid; reading the whole line is then a
// miss that fetches only the missing sectors and keeps the dirty ones.
func TestPartialLineWriteNoRMW(t *testing.T) {
	const ls = 64 << 10
	env := ocftest.New(t, ocftest.Options{Lines: 4, LineSize: ls, Mode: ocf.ModeWB, CoreBytes: 8 * ls})
	c, co := env.Cache, env.Cores[0]
	fillCore(t, env, 0, 'A')
	off := int64(ls + 8<<10) // third 4 KiB block of line 1

	volWrite(t, co, tagged('D', off, 4096), off, false)
	s := co.Stats()
	if s.Requests != wrFull {
		t.Errorf("partial-line write: requests %+v, want one full miss", s.Requests)
	}
	checkTraffic(t, "partial-line write", s.Blocks, traffic{0, 0, 0, 1}, 1)
	checkUsage(t, "after partial write", co, c, 1, 1)

	// The written block alone: a hit.
	co.ResetStats()
	expectBytes(t, "read of written block", volRead(t, co, off, 4096), tagged('D', off, 4096))
	if r := co.Stats().Requests; r != rdHit {
		t.Errorf("read of the written block counted %+v, want hit", r)
	}
	// A block next to it was never written: a miss, from core.
	co.ResetStats()
	expectBytes(t, "read of unwritten block", volRead(t, co, off+4096, 4096), tagged('A', off+4096, 4096))
	if r := co.Stats().Requests; r != rdFull {
		t.Errorf("read of an invalid block of a mapped line counted %+v, want full miss", r)
	}
	// The whole line: a miss (not every touched sector valid); the dirty
	// block must win over the core's copy; only the 14 missing blocks are
	// inserted.
	co.ResetStats()
	want := tagged('A', ls, ls)
	copy(want[8<<10:], tagged('D', off, 4096))
	expectBytes(t, "read of whole line", volRead(t, co, ls, ls), want)
	s = co.Stats()
	if s.Requests != rdFull {
		t.Errorf("whole-line read counted %+v, want full miss", s.Requests)
	}
	if s.Blocks.CacheWr != 14 {
		t.Errorf("whole-line read inserted %d blocks, want 14 (the missing ones only)", s.Blocks.CacheWr)
	}
	checkUsage(t, "after fill", co, c, 1, 1)
	co.ResetStats()
	expectBytes(t, "re-read of whole line", volRead(t, co, ls, ls), want)
	if r := co.Stats().Requests; r != rdHit {
		t.Errorf("re-read counted %+v, want hit", r)
	}
	expectBytes(t, "core device keeps old data until cleaned", devRead(t, env.CoreDevs[0], ls, ls), tagged('A', ls, ls))
	if err := c.FlushDirty(nil, nil); err != nil {
		t.Fatal(err)
	}
	expectBytes(t, "core device after flush", devRead(t, env.CoreDevs[0], ls, ls), want)
	checkUsage(t, "after flush", co, c, 1, 0)
}

// TestPartialSectorsWI: a wi write over two sectors of a cached line
// invalidates exactly those sectors; the rest of the line still hits.
func TestPartialSectorsWI(t *testing.T) {
	env := ocftest.New(t, ocftest.Options{Lines: 4, Mode: ocf.ModeWT})
	c, co := env.Cache, env.Cores[0]
	fillCore(t, env, 0, 'A')
	volRead(t, co, 0, 4096)
	setMode(t, c, ocf.ModeWI, false)
	volWrite(t, co, tagged('D', 1024, 1024), 1024, false)
	checkUsage(t, "after partial wi write", co, c, 1, 0)
	expectBytes(t, "core device", devRead(t, env.CoreDevs[0], 0, 4096)[1024:2048], tagged('D', 1024, 1024))

	// Change sectors 0..3 of the core behind the cache: cached sectors still
	// read 'A', the invalidated ones come from the core.
	devWrite(t, env.CoreDevs[0], tagged('Z', 0, 2048), 0)
	co.ResetStats()
	expectBytes(t, "sectors 0-1 still cached", volRead(t, co, 0, 1024), tagged('A', 0, 1024))
	if r := co.Stats().Requests; r != rdHit {
		t.Errorf("read of still-valid sectors counted %+v, want hit", r)
	}
	co.ResetStats()
	expectBytes(t, "sectors 2-3 invalidated", volRead(t, co, 1024, 1024), tagged('Z', 1024, 1024))
	if r := co.Stats().Requests; r != rdFull {
		t.Errorf("read of invalidated sectors counted %+v, want full miss", r)
	}
}

// TestMultiLineAndPartialMiss: requests spanning lines, starting and ending
// mid-line, and the hit / partial miss / full miss classification by lines.
func TestMultiLineAndPartialMiss(t *testing.T) {
	for _, mode := range []ocf.Mode{ocf.ModeWT, ocf.ModeWB} {
		t.Run(mode.String(), func(t *testing.T) {
			env := ocftest.New(t, ocftest.Options{Lines: 16, Mode: mode})
			c, co := env.Cache, env.Cores[0]
			fillCore(t, env, 0, 'A')

			// Line 1 cached by a read.
			volRead(t, co, 4096, 4096)
			co.ResetStats()
			// Lines 0..2: line 1 hits, 0 and 2 miss.
			expectBytes(t, "read lines 0-2", volRead(t, co, 0, 3*4096), tagged('A', 0, 3*4096))
			if r := co.Stats().Requests; r != rdPartial {
				t.Errorf("read with one of three lines cached counted %+v, want partial miss", r)
			}
			co.ResetStats()
			volRead(t, co, 0, 3*4096)
			if r := co.Stats().Requests; r != rdHit {
				t.Errorf("re-read counted %+v, want hit", r)
			}

			// A write from mid line 2 to mid line 5: lines 2 (cached) and
			// 3..5 (not): a partial miss touching 4 lines.
			off, n := int64(2*4096+1024), 3*4096
			data := tagged('D', off, n)
			co.ResetStats()
			volWrite(t, co, data, off, false)
			if r := co.Stats().Requests; r != wrPartial {
				t.Errorf("write over cached and uncached lines counted %+v, want partial miss", r)
			}
			dirty := uint64(0)
			if mode == ocf.ModeWB {
				dirty = 4
			}
			checkUsage(t, "after multi-line write", co, c, 6, dirty)
			want := tagged('A', 0, 8*4096)
			copy(want[off:], data)
			expectBytes(t, "read lines 0-7", volRead(t, co, 0, 8*4096), want)
			coreWant := want
			if mode == ocf.ModeWB {
				coreWant = tagged('A', 0, 8*4096)
			}
			expectBytes(t, "core device", devRead(t, env.CoreDevs[0], 0, 8*4096), coreWant)

			// Lines 3 and 4 are now fully valid: a write inside them hits.
			co.ResetStats()
			volWrite(t, co, tagged('E', 3*4096, 2*4096), 3*4096, false)
			if r := co.Stats().Requests; r != wrHit {
				t.Errorf("write inside written lines counted %+v, want hit", r)
			}
		})
	}
}

// TestPassThroughCounting: engine.md's statistics: pass-through requests
// count in total, not in rd_total / wr_total / serviced.
func TestPassThroughCounting(t *testing.T) {
	env := ocftest.New(t, ocftest.Options{Lines: 16, Mode: ocf.ModePT})
	c, co := env.Cache, env.Cores[0]
	for i := range 5 {
		volRead(t, co, int64(i)*4096, 4096)
	}
	for i := range 3 {
		volWrite(t, co, tagged('D', int64(i)*4096, 4096), int64(i)*4096, false)
	}
	want := reqStats(0, 0, 0, 5, 0, 0, 0, 3)
	if r := co.Stats().Requests; r != want {
		t.Errorf("core requests %+v, want %+v", r, want)
	}
	if r := c.Stats().Requests; r != want {
		t.Errorf("cache requests %+v, want %+v", r, want)
	}
	if r := co.Stats().Requests; r.Serviced != 0 || r.RdTotal != 0 || r.WrTotal != 0 || r.Total != 8 {
		t.Errorf("pass-through must count in total only: %+v", r)
	}
	checkUsage(t, "pt never inserts", co, c, 0, 0)
}

// TestDiscard: a discard reaches the core, invalidates the covered sectors
// (dirty ones included), counts its blocks in core_volume_wr and no request.
func TestDiscard(t *testing.T) {
	env := ocftest.New(t, ocftest.Options{Lines: 16, Mode: ocf.ModeWB})
	c, co := env.Cache, env.Cores[0]
	fillCore(t, env, 0, 'A')
	data := tagged('D', 0, 2*4096)
	volWrite(t, co, data, 0, false)
	checkUsage(t, "after write", co, c, 2, 2)
	co.ResetStats()

	// Line 0 and the first half of line 1.
	if err := co.Discard(0, 6144); err != nil {
		t.Fatal(err)
	}
	s := co.Stats()
	if s.Requests != (ocf.RequestStats{}) {
		t.Errorf("discard counted as requests %+v, want none", s.Requests)
	}
	if s.Blocks.CoreWr != 2 || s.Blocks.CacheWr != 0 || s.Blocks.VolumeWr != 0 {
		t.Errorf("discard of 6 KiB: blocks %+v, want core_volume_wr 2 and nothing else written", s.Blocks)
	}
	checkUsage(t, "after discard", co, c, 1, 1)

	want := make([]byte, 2*4096) // malloc reads discarded ranges as zeroes
	copy(want[6144:], data[6144:])
	expectBytes(t, "read after discard", volRead(t, co, 0, 2*4096), want)
	expectBytes(t, "core device after discard", devRead(t, env.CoreDevs[0], 0, 6144), make([]byte, 6144))
	if err := c.FlushDirty(nil, nil); err != nil {
		t.Fatal(err)
	}
	expectBytes(t, "core device after flush", devRead(t, env.CoreDevs[0], 0, 2*4096), want)

	// Discard is checked like any IO.
	if err := co.Discard(100, 512); !errors.Is(err, bdev.ErrInvalidIO) {
		t.Errorf("misaligned discard: %v, want ErrInvalidIO", err)
	}
}

// TestModeChangeKeepsDirtyData: leaving wb without a flush leaves dirty data
// in the cache, still read; with a flush, the core gets it.
func TestModeChangeKeepsDirtyData(t *testing.T) {
	for _, to := range []ocf.Mode{ocf.ModeWT, ocf.ModeWA, ocf.ModeWI, ocf.ModePT, ocf.ModeWO} {
		for _, flush := range []bool{false, true} {
			t.Run(fmt.Sprintf("wb->%s/flush=%v", to, flush), func(t *testing.T) {
				env := ocftest.New(t, ocftest.Options{Lines: 16, Mode: ocf.ModeWB})
				c, co := env.Cache, env.Cores[0]
				fillCore(t, env, 0, 'A')
				data := tagged('D', 4096, 3*4096)
				volWrite(t, co, data, 4096, false)
				setMode(t, c, to, flush)
				if c.Mode() != to {
					t.Fatalf("mode %s after SetMode(%s)", c.Mode(), to)
				}
				flushed := flush && to != ocf.ModeWO // wo writes back: no flush asked for
				dirty := uint64(3)
				coreWant := tagged('A', 4096, 3*4096)
				if flushed {
					dirty, coreWant = 0, data
				}
				checkUsage(t, "after mode change", co, c, 3, dirty)
				expectBytes(t, "core device", devRead(t, env.CoreDevs[0], 4096, 3*4096), coreWant)
				expectBytes(t, "read after mode change", volRead(t, co, 4096, 3*4096), data)
				// Reads of part of the data, and with neighbours that miss.
				expectBytes(t, "read of a part", volRead(t, co, 2*4096+512, 1024), data[4096+512:4096+1536])
				want := tagged('A', 0, 5*4096)
				copy(want[4096:], data)
				expectBytes(t, "read around the data", volRead(t, co, 0, 5*4096), want)
			})
		}
	}
}

// TestFlushDirtyPerCore: flushing one core writes back its lines only.
func TestFlushDirtyPerCore(t *testing.T) {
	env := ocftest.New(t, ocftest.Options{Lines: 16, Mode: ocf.ModeWB, Cores: 2})
	c := env.Cache
	fillCore(t, env, 0, 'A')
	fillCore(t, env, 1, 'A')
	d0, d1 := tagged('D', 0, 2*4096), tagged('E', 0, 3*4096)
	volWrite(t, env.Cores[0], d0, 0, false)
	volWrite(t, env.Cores[1], d1, 0, false)
	if u := c.Stats().Usage; u.Dirty != 5 || u.Occupancy != 5 {
		t.Errorf("cache usage before flush %+v, want 5 dirty blocks", u)
	}

	var calls, last int
	if err := c.FlushDirty(env.Cores[0], func(done, total int) { calls, last = calls+1, done }); err != nil {
		t.Fatal(err)
	}
	if calls == 0 || last != 2 {
		t.Errorf("progress: %d calls, last done=%d, want done=2", calls, last)
	}
	expectBytes(t, "core 0 device after its flush", devRead(t, env.CoreDevs[0], 0, 2*4096), d0)
	expectBytes(t, "core 1 device untouched by core 0's flush", devRead(t, env.CoreDevs[1], 0, 3*4096), tagged('A', 0, 3*4096))
	if u := env.Cores[0].Stats().Usage; u.Dirty != 0 || u.Occupancy != 2 {
		t.Errorf("core 0 usage after its flush %+v, want 2 clean blocks", u)
	}
	if u := env.Cores[1].Stats().Usage; u.Dirty != 3 || u.Occupancy != 3 {
		t.Errorf("core 1 usage after core 0's flush %+v, want 3 dirty blocks", u)
	}
	if u := c.Stats().Usage; u.Dirty != 3 || u.Occupancy != 5 {
		t.Errorf("cache usage %+v, want occupancy 5 dirty 3", u)
	}
	expectBytes(t, "core 1 read", volRead(t, env.Cores[1], 0, 3*4096), d1)
	if err := c.FlushDirty(nil, nil); err != nil {
		t.Fatal(err)
	}
	expectBytes(t, "core 1 device after full flush", devRead(t, env.CoreDevs[1], 0, 3*4096), d1)
}

// TestEvictionCleansDirtyLines: with two lines of cache in wb, writing ten
// distinct lines must clean dirty lines to the core before reusing them:
// every write is still cached (no fallback), everything reads back, and the
// lines no longer cached are on the core.
func TestEvictionCleansDirtyLines(t *testing.T) {
	for _, ls := range testLineSizes {
		t.Run(fmt.Sprintf("%dK", ls>>10), func(t *testing.T) {
			// No sequential cutoff, which would send the consecutive
			// writes around this tiny (always "full") cache.
			env := ocftest.New(t, ocftest.Options{Lines: 2, LineSize: ls, Mode: ocf.ModeWB, CoreBytes: 16 * ls, SeqCutoff: ocf.CutoffNever{}})
			c, co := env.Cache, env.Cores[0]
			n := int(ls)
			for i := range 10 {
				off := int64(i) * ls
				volWrite(t, co, tagged(byte('a'+i), off, n), off, false)
			}
			s := co.Stats()
			if want := reqStats(0, 0, 0, 0, 0, 0, 10, 0); s.Requests != want {
				t.Errorf("ten write misses counted %+v, want %+v (dirty lines must be cleaned, not bypassed)", s.Requests, want)
			}
			if s.Usage.Occupancy > 2*uint64(ls/4096) {
				t.Errorf("occupancy %d beyond the cache's 2 lines", s.Usage.Occupancy)
			}
			onCore := 0
			for i := range 10 {
				off := int64(i) * ls
				if bytes.Equal(devRead(t, env.CoreDevs[0], off, n), tagged(byte('a'+i), off, n)) {
					onCore++
				}
			}
			if onCore < 8 {
				t.Errorf("%d of 10 lines on the core device, want at least 8 (all but the cached ones)", onCore)
			}
			for i := range 10 {
				off := int64(i) * ls
				expectBytes(t, fmt.Sprintf("line %d", i), volRead(t, co, off, n), tagged(byte('a'+i), off, n))
			}
			if err := c.FlushDirty(nil, nil); err != nil {
				t.Fatal(err)
			}
			for i := range 10 {
				off := int64(i) * ls
				expectBytes(t, fmt.Sprintf("core line %d after flush", i), devRead(t, env.CoreDevs[0], off, n), tagged(byte('a'+i), off, n))
			}
		})
	}
}

// TestResetStats zeroes requests, blocks and errors but not usage.
func TestResetStats(t *testing.T) {
	env := ocftest.New(t, ocftest.Options{Lines: 16, Mode: ocf.ModeWB, Cores: 2})
	c, co := env.Cache, env.Cores[0]
	volWrite(t, co, tagged('D', 0, 3*4096), 0, false)
	volRead(t, co, 0, 4*4096)
	volWrite(t, env.Cores[1], tagged('E', 0, 4096), 0, false)
	before := co.Stats()
	if before.Requests.Total != 2 || before.Blocks.VolumeTotal == 0 {
		t.Fatalf("stats before reset %+v", before)
	}
	co.ResetStats()
	s := co.Stats()
	if s.Requests != (ocf.RequestStats{}) || s.Blocks != (ocf.BlockStats{}) || s.Errors != (ocf.ErrorStats{}) {
		t.Errorf("after reset: %+v", s)
	}
	if s.Usage != before.Usage {
		t.Errorf("reset changed usage: %+v, was %+v", s.Usage, before.Usage)
	}
	if r := env.Cores[1].Stats().Requests; r != wrFull {
		t.Errorf("reset of core 0 changed core 1: %+v", r)
	}
	if r := c.Stats().Requests; r != wrFull {
		t.Errorf("cache stats after resetting core 0: %+v, want core 1's one write", r)
	}
}

// TestCacheStatsSumCores: the cache's statistics are the sum of its cores'.
func TestCacheStatsSumCores(t *testing.T) {
	env := ocftest.New(t, ocftest.Options{Lines: 16, Mode: ocf.ModeWT, Cores: 3})
	c := env.Cache
	for i, co := range env.Cores {
		for j := 0; j <= i; j++ {
			volWrite(t, co, tagged('D', int64(j)*4096, 4096), int64(j)*4096, false)
			volRead(t, co, int64(j)*4096, 8192)
		}
	}
	var sum ocf.RequestStats
	var blocks ocf.BlockStats
	for _, co := range env.Cores {
		r, b := co.Stats().Requests, co.Stats().Blocks
		sum.RdHits += r.RdHits
		sum.RdPartialMisses += r.RdPartialMisses
		sum.RdFullMisses += r.RdFullMisses
		sum.RdTotal += r.RdTotal
		sum.WrHits += r.WrHits
		sum.WrPartialMisses += r.WrPartialMisses
		sum.WrFullMisses += r.WrFullMisses
		sum.WrTotal += r.WrTotal
		sum.RdPT += r.RdPT
		sum.WrPT += r.WrPT
		sum.Serviced += r.Serviced
		sum.Total += r.Total
		blocks.CoreRd += b.CoreRd
		blocks.CoreWr += b.CoreWr
		blocks.CacheRd += b.CacheRd
		blocks.CacheWr += b.CacheWr
		blocks.VolumeRd += b.VolumeRd
		blocks.VolumeWr += b.VolumeWr
	}
	s := c.Stats()
	if s.Requests != sum {
		t.Errorf("cache requests %+v, sum of cores %+v", s.Requests, sum)
	}
	if s.Blocks.CoreRd != blocks.CoreRd || s.Blocks.CacheWr != blocks.CacheWr || s.Blocks.VolumeRd != blocks.VolumeRd {
		t.Errorf("cache blocks %+v, sum of cores %+v", s.Blocks, blocks)
	}
	if s.Requests.Total != 12 {
		t.Errorf("total %d, want 12 requests", s.Requests.Total)
	}
	var occ uint64
	for _, co := range env.Cores {
		occ += co.Stats().Usage.Occupancy
	}
	if s.Usage.Occupancy != occ {
		t.Errorf("cache occupancy %d, sum of cores %d", s.Usage.Occupancy, occ)
	}
}

// TestInvalidIORejected: misaligned IO, IO beyond the end and negative
// offsets fail with ErrInvalidIO and change nothing: no data, no stats, no
// cache state.
func TestInvalidIORejected(t *testing.T) {
	for _, blockSize := range []uint32{512, 4096} {
		for _, mode := range ocf.Modes() {
			t.Run(fmt.Sprintf("%s/bs=%d", mode, blockSize), func(t *testing.T) {
				const coreBytes = 64 << 10
				env := ocftest.New(t, ocftest.Options{Lines: 16, Mode: mode, CoreBytes: coreBytes, CoreBlockSize: blockSize})
				co := env.Cores[0]
				fillCore(t, env, 0, 'A')
				volRead(t, co, 0, 4096)
				before := co.Stats()
				bs := int(blockSize)
				type io struct {
					off int64
					n   int
				}
				bad := []io{
					{100, bs},                       // misaligned offset
					{0, bs + 100},                   // misaligned length
					{coreBytes - int64(bs), 2 * bs}, // crosses the end
					{coreBytes, bs},                 // starts at the end
					{-int64(bs), bs},                // negative
				}
				if blockSize > 512 {
					bad = append(bad, io{512, bs}, io{0, 512}) // sector-aligned but not block-aligned
				}
				for _, b := range bad {
					what := fmt.Sprintf("off %d len %d", b.off, b.n)
					if err := co.WriteAt(tagged('D', 0, b.n), b.off, false); !errors.Is(err, bdev.ErrInvalidIO) {
						t.Errorf("write %s: %v, want ErrInvalidIO", what, err)
					}
					if err := co.WriteAt(tagged('D', 0, b.n), b.off, true); !errors.Is(err, bdev.ErrInvalidIO) {
						t.Errorf("fua write %s: %v, want ErrInvalidIO", what, err)
					}
					if err := co.ReadAt(make([]byte, b.n), b.off); !errors.Is(err, bdev.ErrInvalidIO) {
						t.Errorf("read %s: %v, want ErrInvalidIO", what, err)
					}
					if err := co.Discard(b.off, int64(b.n)); !errors.Is(err, bdev.ErrInvalidIO) {
						t.Errorf("discard %s: %v, want ErrInvalidIO", what, err)
					}
				}
				if after := co.Stats(); after != before {
					t.Errorf("rejected IO changed stats:\n%+v\nwas\n%+v", after, before)
				}
				expectBytes(t, "core device after rejected IO", devRead(t, env.CoreDevs[0], 0, coreBytes), tagged('A', 0, coreBytes))
				expectBytes(t, "volume after rejected IO", volRead(t, co, 0, coreBytes), tagged('A', 0, coreBytes))
			})
		}
	}
}

// refusePromotion refuses every insertion while refuse is set.
type refusePromotion struct{ refuse atomic.Bool }

func (p *refusePromotion) Promote(ocf.CoreID, uint64, int) bool { return !p.refuse.Load() }

// toggleCutoff cuts every request off while on is set.
type toggleCutoff struct{ on atomic.Bool }

func (s *toggleCutoff) Bypass(ocf.CoreID, int64, int64, bool, bool) bool { return s.on.Load() }

// TestPromotionRefusedFallsBack: a miss whose line the promotion policy
// refuses goes pass-through (reads) or write-invalidate (writes), counted as
// rd_pt / wr_pt.
func TestPromotionRefusedFallsBack(t *testing.T) {
	for _, mode := range []ocf.Mode{ocf.ModeWT, ocf.ModeWB, ocf.ModeWO} {
		t.Run(mode.String(), func(t *testing.T) {
			p := &refusePromotion{}
			env := ocftest.New(t, ocftest.Options{Lines: 16, Mode: mode, Promotion: p})
			c, co := env.Cache, env.Cores[0]
			fillCore(t, env, 0, 'A')
			// A dirty (wb/wo) or clean (wt) cached line 0, admitted before
			// the policy turns.
			volWrite(t, co, tagged('C', 0, 4096), 0, false)
			p.refuse.Store(true)
			co.ResetStats()

			volWrite(t, co, tagged('D', 4096, 4096), 4096, false)
			if r := co.Stats().Requests; r != wrPT {
				t.Errorf("refused write miss counted %+v, want wr_pt", r)
			}
			expectBytes(t, "refused write goes to core", devRead(t, env.CoreDevs[0], 4096, 4096), tagged('D', 4096, 4096))

			// A read over line 0 (cached) and line 2 (refused): pass-through,
			// but line 0's data (dirty in wb/wo) must still be seen.
			co.ResetStats()
			want := append(tagged('C', 0, 4096), tagged('D', 4096, 4096)...)
			want = append(want, tagged('A', 8192, 4096)...)
			got := volRead(t, co, 0, 3*4096)
			expectBytes(t, "read with refused promotion", got, want)
			wantReq := rdPT
			if mode == ocf.ModeWO {
				// wo reads never insert, so promotion is not asked: one
				// line of three valid makes a partial miss.
				wantReq = rdPartial
			}
			if r := co.Stats().Requests; r != wantReq {
				t.Errorf("refused read counted %+v, want %+v", r, wantReq)
			}
			dirty := uint64(0)
			if mode != ocf.ModeWT {
				dirty = 1
			}
			checkUsage(t, "nothing inserted", co, c, 1, dirty)
		})
	}
}

// TestSeqCutoffRespectsDirtyData: cut-off IO goes pass-through, and dirty
// data is still respected: reads see it, writes over it invalidate it.
func TestSeqCutoffRespectsDirtyData(t *testing.T) {
	cut := &toggleCutoff{}
	env := ocftest.New(t, ocftest.Options{Lines: 16, Mode: ocf.ModeWB, SeqCutoff: cut})
	c, co := env.Cache, env.Cores[0]
	fillCore(t, env, 0, 'A')
	volWrite(t, co, tagged('D', 0, 8192), 0, false) // lines 0-1 dirty
	cut.on.Store(true)
	co.ResetStats()

	want := append(tagged('D', 0, 8192), tagged('A', 8192, 8192)...)
	expectBytes(t, "cut-off read over dirty and uncached lines", volRead(t, co, 0, 4*4096), want)
	if r := co.Stats().Requests; r != rdPT {
		t.Errorf("cut-off read counted %+v, want rd_pt", r)
	}
	checkUsage(t, "cut-off read inserts nothing", co, c, 2, 2)

	// A cut-off write over half of line 1 and line 2.
	co.ResetStats()
	e := tagged('E', 4096+2048, 2*4096)
	volWrite(t, co, e, 4096+2048, false)
	if r := co.Stats().Requests; r != wrPT {
		t.Errorf("cut-off write counted %+v, want wr_pt", r)
	}
	copy(want[4096+2048:], e)
	expectBytes(t, "read after cut-off write", volRead(t, co, 0, 4*4096), want)
	expectBytes(t, "core device has the cut-off write", devRead(t, env.CoreDevs[0], 4096+2048, 2*4096), e)
	cut.on.Store(false)
	if err := c.FlushDirty(nil, nil); err != nil {
		t.Fatal(err)
	}
	expectBytes(t, "core device after flush (stale dirty sectors must not overwrite the cut-off write)", devRead(t, env.CoreDevs[0], 0, 4*4096), want)
}

// TestEvictionLRU: clean lines are evicted least recently used first, and a
// hit counts as a use.
func TestEvictionLRU(t *testing.T) {
	env := ocftest.New(t, ocftest.Options{Lines: 2, Mode: ocf.ModeWT})
	co := env.Cores[0]
	fillCore(t, env, 0, 'A')
	volRead(t, co, 0, 4096)    // line 0
	volRead(t, co, 4096, 4096) // line 1
	volRead(t, co, 0, 4096)    // hit: line 0 is now the most recently used
	volRead(t, co, 8192, 4096) // line 2 evicts line 1
	if got := readClass(t, co, 0, 4096); got != "hit" {
		t.Errorf("recently used line 0 after eviction: %s, want hit", got)
	}
	if got := readClass(t, co, 4096, 4096); got != "full" {
		t.Errorf("least recently used line 1 after eviction: %s, want full miss", got)
	}
	checkUsage(t, "full cache", co, env.Cache, 2, 0)
}

// TestCleaningWritesOnlyDirtySectors: cleaning a line with one dirty sector
// and nothing else valid writes that sector alone to the core, never the
// invalid rest of the line.
func TestCleaningWritesOnlyDirtySectors(t *testing.T) {
	const ls = 64 << 10
	env := ocftest.New(t, ocftest.Options{Lines: 4, LineSize: ls, Mode: ocf.ModeWB, CoreBytes: 4 * ls})
	c, co := env.Cache, env.Cores[0]
	fillCore(t, env, 0, 'A')
	volWrite(t, co, tagged('D', ls+5*512, 512), ls+5*512, false)
	co.ResetStats()
	if err := c.FlushDirty(co, nil); err != nil {
		t.Fatal(err)
	}
	want := tagged('A', ls, ls)
	copy(want[5*512:], tagged('D', ls+5*512, 512))
	expectBytes(t, "core line after cleaning one dirty sector", devRead(t, env.CoreDevs[0], ls, ls), want)
	if b := co.Stats().Blocks; b.CoreWr != 1 || b.CacheRd != 1 {
		t.Errorf("cleaning one sector: blocks %+v, want 1 block read from cache and written to core", b)
	}
	if r := co.Stats().Requests; r != (ocf.RequestStats{}) {
		t.Errorf("cleaning counted as requests: %+v", r)
	}
	checkUsage(t, "after cleaning", co, c, 1, 0)
	expectBytes(t, "volume after cleaning", volRead(t, co, ls, ls), want)
}

// TestSetModeValidation: an unknown mode is refused and changes nothing;
// every mode round-trips through its name.
func TestSetModeValidation(t *testing.T) {
	env := ocftest.New(t, ocftest.Options{Lines: 4, Mode: ocf.ModeWB})
	if err := env.Cache.SetMode(ocf.Mode(6), false); !errors.Is(err, ocf.ErrInvalidConfig) {
		t.Errorf("SetMode(6): %v, want ErrInvalidConfig", err)
	}
	if m := env.Cache.Mode(); m != ocf.ModeWB {
		t.Errorf("mode %s after a refused change, want wb", m)
	}
	for _, m := range ocf.Modes() {
		got, err := ocf.ParseMode(m.String())
		if err != nil || got != m {
			t.Errorf("ParseMode(%q) = %v, %v", m.String(), got, err)
		}
	}
	if _, err := ocf.ParseMode("wx"); !errors.Is(err, ocf.ErrInvalidConfig) {
		t.Errorf("ParseMode(wx): %v, want ErrInvalidConfig", err)
	}
}
