package ocf_test

import (
	"fmt"
	"testing"

	"pgregory.net/rapid"

	"blockcache/internal/ocf"
	"blockcache/internal/ocf/ocftest"
)

// Reads in write-only mode, as OCF does them: classified like any read (a
// line is a hit when every sector the read touches in it is valid), served
// from the cache when every touched sector is valid, clean or dirty, else
// from the core with the dirty sectors laid over it; never inserted; and
// subject to the sequential cutoff like any read that misses.

// sectorKind is what the cache holds of a sector before the read.
type sectorKind byte

const (
	sectorInvalid sectorKind = 'I'
	sectorClean   sectorKind = 'C'
	sectorDirty   sectorKind = 'D'
)

// TestWOReadClassification draws, sector by sector, any mix of invalid,
// clean and dirty sectors under a read of one to three lines, then reads it
// in wo. The core is changed behind the cache's back after the setup, so
// each sector's data says where it was served from: 'C' and 'D' from the
// cache, 'B' from the core.
func TestWOReadClassification(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		ls := rapid.SampledFrom([]int64{4 << 10, 8 << 10}).Draw(rt, "lineSize")
		spl := int(ls / 512)
		env := ocftest.New(rt, ocftest.Options{Lines: 16, LineSize: ls, Mode: ocf.ModeWT, CoreBytes: 8 * ls})
		c, co := env.Cache, env.Cores[0]
		fill := func(tag byte) {
			if err := env.CoreDevs[0].WriteAt(tagged(tag, 0, int(8*ls)), 0, false); err != nil {
				rt.Fatal(err)
			}
		}
		fill('A')
		first := rapid.IntRange(0, 3*spl-1).Draw(rt, "firstSector") // within lines 0-2
		count := rapid.IntRange(1, 3*spl).Draw(rt, "sectors")
		// Which kinds may occur, then each sector's: so that reads with
		// every sector valid, or none, are as common as mixed ones.
		allowed := rapid.SampledFrom([][]sectorKind{
			{sectorInvalid}, {sectorClean}, {sectorDirty},
			{sectorClean, sectorDirty}, {sectorInvalid, sectorClean}, {sectorInvalid, sectorDirty},
			{sectorInvalid, sectorClean, sectorDirty},
		}).Draw(rt, "allowed")
		kinds := make([]sectorKind, count)
		for i := range kinds {
			kinds[i] = rapid.SampledFrom(allowed).Draw(rt, "kind")
		}
		off, n := int64(first)*512, count*512

		// Set up: one-sector writes, wt for clean and wb for dirty, with
		// no cutoff; then back to the defaults for the read.
		if err := co.SetSeqCutoff(seqCutoffPolicy(ocf.SeqCutoffNever)); err != nil {
			rt.Fatal(err)
		}
		want := make([]byte, 0, n)
		for i, k := range kinds {
			so := off + int64(i)*512
			switch k {
			case sectorClean, sectorDirty:
				mode := ocf.ModeWT
				if k == sectorDirty {
					mode = ocf.ModeWB
				}
				if err := c.SetMode(mode, false); err != nil {
					rt.Fatal(err)
				}
				if err := co.WriteAt(tagged(byte(k), so, 512), so, false); err != nil {
					rt.Fatal(err)
				}
			}
		}
		if err := co.SetSeqCutoff(ocf.DefaultSeqCutoffParams()); err != nil {
			rt.Fatal(err)
		}
		if err := c.SetMode(ocf.ModeWO, false); err != nil {
			rt.Fatal(err)
		}
		fill('B')
		before := co.SectorStates(off, int64(n))

		// Expected: class by lines, source by "every sector valid".
		allValid, dirtyBytes := true, uint64(0)
		lines, hitLines := 0, 0
		for i := 0; i < count; {
			line := (first + i) / spl
			hit := true
			for ; i < count && (first+i)/spl == line; i++ {
				hit = hit && kinds[i] != sectorInvalid
				if kinds[i] == sectorDirty {
					dirtyBytes += 512
				}
			}
			allValid = allValid && hit
			lines++
			if hit {
				hitLines++
			}
		}
		class := readStatsFor(hitLines, lines)
		for i, k := range kinds {
			so := off + int64(i)*512
			switch {
			case k == sectorDirty || allValid:
				want = append(want, tagged(byte(k), so, 512)...)
			default:
				want = append(want, tagged('B', so, 512)...)
			}
		}

		co.ResetStats()
		what := fmt.Sprintf("wo read of %q (%d of %d lines hit)", kinds, hitLines, lines)
		got := make([]byte, n)
		if err := co.ReadAt(got, off); err != nil {
			rt.Fatalf("%s: %v", what, err)
		}
		if diff := diffAt(got, want); diff != "equal" {
			rt.Fatalf("%s: %s", what, diff)
		}
		s := co.Stats()
		if s.Requests != class {
			rt.Fatalf("%s: counted %+v, want %+v", what, s.Requests, class)
		}
		blocks := func(b uint64) uint64 { return (b + 4095) / 4096 }
		wantCoreRd, wantCacheRd := blocks(uint64(n)), blocks(dirtyBytes)
		if allValid {
			wantCoreRd, wantCacheRd = 0, blocks(uint64(n))
		}
		if b := s.Blocks; b.CoreRd != wantCoreRd || b.CacheRd != wantCacheRd || b.CacheWr != 0 || b.CoreWr != 0 {
			rt.Fatalf("%s: blocks %+v, want core_rd %d, cache_rd %d, no writes", what, b, wantCoreRd, wantCacheRd)
		}
		after := co.SectorStates(off, int64(n))
		for i := range after {
			if after[i] != before[i] {
				rt.Fatalf("%s: sector %d went from %+v to %+v: a wo read inserted", what, first+i, before[i], after[i])
			}
		}
	})
}

// TestWORereadHits is the example measured on SPDK's OCF bdev: write 4
// lines, rewrite them, read them 12 times, all in wo: 12 read hits, no
// misses, all served from the cache.
func TestWORereadHits(t *testing.T) {
	env := ocftest.New(t, ocftest.Options{Lines: 16, Mode: ocf.ModeWO})
	co := env.Cores[0]
	fillCore(t, env, 0, 'A')
	volWrite(t, co, tagged('C', 0, 4*4096), 0, false)
	d := tagged('D', 0, 4*4096)
	volWrite(t, co, d, 0, false)
	co.ResetStats()
	for range 12 {
		expectBytes(t, "re-read", volRead(t, co, 0, 4*4096), d)
	}
	s := co.Stats()
	if want := reqStats(12, 0, 0, 0, 0, 0, 0, 0); s.Requests != want {
		t.Errorf("12 re-reads counted %+v, want %+v", s.Requests, want)
	}
	if b := s.Blocks; b.CacheRd != 12*4 || b.CoreRd != 0 {
		t.Errorf("12 re-reads moved %+v, want 48 blocks from the cache, none from the core", b)
	}
	checkUsage(t, "after re-reads", co, env.Cache, 4, 4)
}

// TestWOReadsPassTheCutoff: a wo read that misses and continues a read
// stream that reaches the threshold is cut off (rd_pt) when the cache is
// "full" (a 16-line cache always is). One that hits is served from the
// cache without the check and is not recorded as a stream, as in every mode
// (engine.md: where blockcache differs from OCF), so the read after it
// starts a stream of its own.
func TestWOReadsPassTheCutoff(t *testing.T) {
	env := ocftest.New(t, ocftest.Options{Lines: 16, Mode: ocf.ModeWO})
	co := env.Cores[0]
	fillCore(t, env, 0, 'A')
	volWrite(t, co, tagged('D', 8*4096, 4096), 8*4096, false) // line 8 dirty
	for i, want := range []string{"full", "pt", "pt", "pt"} { // lines 0-3, one stream
		if got := readClass(t, co, int64(i)*4096, 4096); got != want {
			t.Errorf("read of line %d counted %s, want %s", i, got, want)
		}
	}
	if got := readClass(t, co, 8*4096, 4096); got != "hit" {
		t.Errorf("read of dirty line 8 counted %s, want hit", got)
	}
	if got := readClass(t, co, 9*4096, 4096); got != "full" {
		t.Errorf("read of line 9, after a hit on line 8, counted %s, want a full miss", got)
	}
	if got := readClass(t, co, 10*4096, 4096); got != "pt" {
		t.Errorf("read of line 10, continuing line 9's stream, counted %s, want pt", got)
	}
	checkUsage(t, "wo reads insert nothing", co, env.Cache, 1, 1)
}
