package ocf_test

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"pgregory.net/rapid"

	"blockcache/internal/ocf"
	"blockcache/internal/ocf/ocftest"
)

// TestModel runs random operation sequences against the engine and a flat
// byte array per core (the reference model), across every mode, line size,
// and cache sizes far smaller than the cores, with several cores sharing one
// cache. Every read must equal the model; after a cache flush the core
// devices alone must equal it; whenever no dirty data can exist the cores
// must equal it too. Stats and metadata invariants are checked after each op.
// Each read is also checked against the cache's state just before it (see
// checkReadClass): how it is counted, where its data came from, and, in wo,
// that it inserted nothing.
func TestModel(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		lineSize := rapid.SampledFrom([]int64{4 << 10, 8 << 10, 16 << 10, 32 << 10, 64 << 10}).Draw(rt, "lineSize")
		mode := rapid.SampledFrom(ocf.Modes()).Draw(rt, "mode")
		nCores := rapid.IntRange(1, 3).Draw(rt, "cores")
		lines := rapid.IntRange(1, 12).Draw(rt, "lines")
		coreBytes := lineSize * int64(rapid.IntRange(2, 24).Draw(rt, "coreLines"))
		env := ocftest.New(rt, ocftest.Options{Lines: lines, LineSize: lineSize, Mode: mode, Cores: nCores, CoreBytes: coreBytes})
		m := newModel(env, coreBytes)
		if m.background = rapid.Bool().Draw(rt, "backgroundCleaner"); m.background {
			// acp every millisecond, or alru cleaning whenever the dirty
			// lines are above a target (looked at every millisecond),
			// racing with the operations below.
			p := ocf.DefaultCleaningParams()
			if rapid.Bool().Draw(rt, "pressure") {
				p.ALRU.MaxDirtyRatio = uint32(rapid.IntRange(0, 80).Draw(rt, "maxDirtyRatio"))
				p.MaxInflight = uint32(rapid.IntRange(1, 4).Draw(rt, "maxInflight"))
				env.Cache.SetCleanerPoll(time.Millisecond)
			} else {
				p.Kind, p.ACP.WakeUp = ocf.CleanACP, time.Millisecond
			}
			if err := env.Cache.SetCleaning(p); err != nil {
				rt.Fatal(err)
			}
			env.Cache.StartCleaner()
			rt.Cleanup(func() {
				for _, co := range env.Cores {
					_ = env.Cache.RemoveCore(co, false)
				}
				_ = env.Cache.Stop()
			})
		}
		rt.Repeat(m.actions(rt, lineSize))
	})
}

type model struct {
	env       *ocftest.Env
	coreBytes int64
	want      [][]byte // per core: the volume's expected contents
	mayDirty  bool     // a write-back mode was used since the last full flush
	seq       byte
	// background is set when the cleaner runs concurrently: it moves
	// block counters and clears dirty bits at any time.
	background bool
}

func newModel(env *ocftest.Env, coreBytes int64) *model {
	m := &model{env: env, coreBytes: coreBytes}
	for range env.Cores {
		m.want = append(m.want, make([]byte, coreBytes))
	}
	m.mayDirty = env.Cache.Mode() == ocf.ModeWB || env.Cache.Mode() == ocf.ModeWO
	return m
}

// span draws a sector-aligned range that often crosses line boundaries.
func (m *model) span(t *rapid.T, lineSize int64) (core int, off, n int64) {
	core = rapid.IntRange(0, len(m.want)-1).Draw(t, "core")
	sectors := m.coreBytes / 512
	start := rapid.Int64Range(0, sectors-1).Draw(t, "sector")
	maxLen := min(sectors-start, 3*lineSize/512)
	count := rapid.Int64Range(1, maxLen).Draw(t, "sectors")
	return core, start * 512, count * 512
}

func (m *model) actions(t *rapid.T, lineSize int64) map[string]func(*rapid.T) {
	c := m.env.Cache
	return map[string]func(*rapid.T){
		"write": func(t *rapid.T) {
			core, off, n := m.span(t, lineSize)
			fua := rapid.Bool().Draw(t, "fua")
			m.seq++
			p := bytes.Repeat([]byte{m.seq}, int(n))
			for i := 0; i < len(p); i += 512 {
				p[i] = byte(core) // tag sectors with their core, to catch cross-core mixups
				p[i+1] = byte((off + int64(i)) / 512)
			}
			if err := m.env.Cores[core].WriteAt(p, off, fua); err != nil {
				t.Fatalf("write core %d at %d len %d: %v", core, off, n, err)
			}
			copy(m.want[core][off:], p)
		},
		"read": func(t *rapid.T) {
			core, off, n := m.span(t, lineSize)
			co := m.env.Cores[core]
			before := co.SectorStates(off, n)
			co.ResetStats()
			got := make([]byte, n)
			if err := co.ReadAt(got, off); err != nil {
				t.Fatalf("read core %d at %d len %d: %v", core, off, n, err)
			}
			if !bytes.Equal(got, m.want[core][off:off+n]) {
				t.Fatalf("read core %d at %d len %d (mode %s): %s", core, off, n, c.Mode(), diffAt(got, m.want[core][off:off+n]))
			}
			m.checkReadClass(t, co, off, n, lineSize, before)
		},
		"discard": func(t *rapid.T) {
			core, off, n := m.span(t, lineSize)
			if err := m.env.Cores[core].Discard(off, n); err != nil {
				t.Fatalf("discard: %v", err)
			}
			clear(m.want[core][off : off+n]) // malloc cores read discarded ranges as zeroes
		},
		"flush": func(t *rapid.T) {
			core := rapid.IntRange(0, len(m.want)-1).Draw(t, "core")
			if err := m.env.Cores[core].Flush(); err != nil {
				t.Fatalf("flush: %v", err)
			}
		},
		"setMode": func(t *rapid.T) {
			mode := rapid.SampledFrom(ocf.Modes()).Draw(t, "mode")
			flushFirst := rapid.Bool().Draw(t, "flushFirst")
			if err := c.SetMode(mode, flushFirst); err != nil {
				t.Fatalf("set mode: %v", err)
			}
			if flushFirst && mode != ocf.ModeWB && mode != ocf.ModeWO {
				m.mayDirty = false
				m.checkCores(t, "after mode change with flush")
			}
			if mode == ocf.ModeWB || mode == ocf.ModeWO {
				m.mayDirty = true
			}
		},
		"flushCache": func(t *rapid.T) {
			one := rapid.Bool().Draw(t, "oneCore")
			if one {
				core := rapid.IntRange(0, len(m.want)-1).Draw(t, "core")
				if err := c.FlushDirty(m.env.Cores[core], nil); err != nil {
					t.Fatalf("flush core %d: %v", core, err)
				}
				if !bytes.Equal(m.coreBytesOf(t, core), m.want[core]) {
					t.Fatalf("core %d device differs from model after its flush", core)
				}
				return
			}
			if err := c.FlushDirty(nil, nil); err != nil {
				t.Fatalf("flush cache: %v", err)
			}
			if s := c.Stats(); s.Usage.Dirty != 0 {
				t.Fatalf("dirty %d after full flush", s.Usage.Dirty)
			}
			if c.Mode() != ocf.ModeWB && c.Mode() != ocf.ModeWO {
				m.mayDirty = false
			}
			m.checkCores(t, "after cache flush")
		},
		"setPolicies": func(t *rapid.T) {
			pp := ocf.PromotionParams{Kind: rapid.SampledFrom([]ocf.PromotionKind{ocf.PromoteAlwaysKind, ocf.PromoteNHitKind}).Draw(t, "promotion"),
				InsertionThreshold: uint32(rapid.IntRange(2, 4).Draw(t, "insertion")),
				TriggerThreshold:   uint32(rapid.IntRange(0, 100).Draw(t, "trigger"))}
			if err := c.SetPromotion(pp); err != nil {
				t.Fatalf("set promotion: %v", err)
			}
			sp := ocf.SeqCutoffParams{Policy: rapid.SampledFrom([]ocf.SeqCutoffPolicy{ocf.SeqCutoffFull, ocf.SeqCutoffAlways, ocf.SeqCutoffNever}).Draw(t, "seqPolicy"),
				ThresholdBytes: uint64(rapid.IntRange(1, 16).Draw(t, "seqKiB")) * 1024, PromotionCount: uint32(rapid.IntRange(1, 3).Draw(t, "seqCount"))}
			for _, co := range m.env.Cores {
				if err := co.SetSeqCutoff(sp); err != nil {
					t.Fatalf("set seq cutoff: %v", err)
				}
			}
		},
		"cleanStep": func(t *rapid.T) {
			// One round of alru or acp now (alru with no staleness or
			// idleness required, and a dirty-ratio target or none), from
			// the test's goroutine.
			p := ocf.DefaultCleaningParams()
			p.Kind = rapid.SampledFrom([]ocf.CleaningKind{ocf.CleanALRU, ocf.CleanACP, ocf.CleanNOP}).Draw(t, "cleaning")
			p.ALRU.StalenessTime, p.ALRU.ActivityThreshold = time.Second, 0
			p.ALRU.MaxDirtyRatio = uint32(rapid.SampledFrom([]int{0, 50, 100}).Draw(t, "maxDirtyRatio"))
			p.MaxInflight = uint32(rapid.IntRange(1, 8).Draw(t, "maxInflight"))
			if err := c.SetCleaning(p); err != nil {
				t.Fatalf("set cleaning: %v", err)
			}
			if _, _, err := c.CleanStep(time.Now().Add(time.Hour)); err != nil {
				t.Fatalf("clean step: %v", err)
			}
		},
		"": func(t *rapid.T) { m.checkInvariants(t) },
	}
}

// checkReadClass checks one read of [off, off+n) of co, with the stats
// reset just before it, against before, the cache's state of its sectors
// then. A line is a hit when every sector the read touches in it is valid;
// the read is a hit if all its lines are, a full miss if none is, else a
// partial miss (engine.md, OCF). A hit is counted so in every mode but pt
// and served from the cache alone; a miss may instead be counted rd_pt
// (promotion, sequential cutoff, no line to map) and reads the core, with
// the dirty sectors from the cache. A wo read never inserts.
func (m *model) checkReadClass(t *rapid.T, co *ocf.Core, off, n, lineSize int64, before []ocf.SectorState) {
	mode := m.env.Cache.Mode()
	lines, hitLines, dirtyBytes := 0, 0, uint64(0)
	for first := int64(0); first < int64(len(before)); {
		end := min(int64(len(before)), ((off/512+first)/(lineSize/512)+1)*(lineSize/512)-off/512)
		hit := true
		for _, s := range before[first:end] {
			hit = hit && s.Valid
			if s.Dirty {
				dirtyBytes += 512
			}
		}
		lines++
		if hit {
			hitLines++
		}
		first = end
	}
	class := readStatsFor(hitLines, lines)
	what := fmt.Sprintf("read at %d len %d in %s (%d of %d lines hit)", off, n, mode, hitLines, lines)
	s := co.Stats()
	switch {
	case mode == ocf.ModePT:
		class = rdPT
		fallthrough
	case class == rdHit:
		if s.Requests != class {
			t.Fatalf("%s: counted %+v, want %+v", what, s.Requests, class)
		}
	case s.Requests != class && s.Requests != rdPT:
		t.Fatalf("%s: counted %+v, want %+v or rd_pt", what, s.Requests, class)
	}
	blocks := func(b uint64) uint64 { return (b + 4095) / 4096 }
	b := s.Blocks
	if !m.background {
		if class == rdHit && mode != ocf.ModePT {
			if b.CoreRd != 0 || b.CacheRd != blocks(uint64(n)) {
				t.Fatalf("%s: a hit moved %+v, want everything from the cache", what, b)
			}
		} else if b.CoreRd != blocks(uint64(n)) || b.CacheRd < blocks(dirtyBytes) ||
			(mode == ocf.ModeWO || mode == ocf.ModePT) && b.CacheRd != blocks(dirtyBytes) {
			// (Other modes may clean lines to make room: more cache reads.)
			t.Fatalf("%s: a miss moved %+v, want all from the core and %d dirty bytes from the cache", what, b, dirtyBytes)
		}
	}
	if mode != ocf.ModeWO {
		return
	}
	if b.CacheWr != 0 {
		t.Fatalf("%s: wrote %d blocks to the cache", what, b.CacheWr)
	}
	after := co.SectorStates(off, n)
	for k := range after {
		if after[k].Valid != before[k].Valid || after[k].Dirty && !before[k].Dirty || !m.background && after[k] != before[k] {
			t.Fatalf("%s: sector %d went from %+v to %+v; a wo read changes nothing", what, off/512+int64(k), before[k], after[k])
		}
	}
}

func (m *model) coreBytesOf(t *rapid.T, core int) []byte {
	b := make([]byte, m.coreBytes)
	if err := m.env.CoreDevs[core].ReadAt(b, 0); err != nil {
		t.Fatal(err)
	}
	return b
}

func (m *model) checkCores(t *rapid.T, when string) {
	for i := range m.want {
		if got := m.coreBytesOf(t, i); !bytes.Equal(got, m.want[i]) {
			t.Fatalf("core %d device differs from model %s: %s", i, when, diffAt(got, m.want[i]))
		}
	}
}

func (m *model) checkInvariants(t *rapid.T) {
	c := m.env.Cache
	if errs := c.Check(); len(errs) > 0 {
		t.Fatalf("check: %v", errs)
	}
	if !m.mayDirty {
		m.checkCores(t, fmt.Sprintf("in mode %s with no dirty data possible", c.Mode()))
	}
	s := c.Stats()
	checkStats(t, s, c)
	for _, co := range m.env.Cores {
		checkStats(t, co.Stats(), c)
	}
}

func checkStats(t interface{ Fatalf(string, ...any) }, s ocf.Stats, c *ocf.Cache) {
	r, u := s.Requests, s.Usage
	if r.RdHits+r.RdPartialMisses+r.RdFullMisses != r.RdTotal || r.WrHits+r.WrPartialMisses+r.WrFullMisses != r.WrTotal {
		t.Fatalf("request totals do not add up: %+v", r)
	}
	if r.Serviced != r.RdTotal+r.WrTotal || r.Total != r.Serviced+r.RdPT+r.WrPT {
		t.Fatalf("serviced/total do not add up: %+v", r)
	}
	if u.Occupancy != u.Clean+u.Dirty {
		t.Fatalf("occupancy %d != clean %d + dirty %d", u.Occupancy, u.Clean, u.Dirty)
	}
	if u.Occupancy > s.CacheSize4K || u.Free > s.CacheSize4K {
		t.Fatalf("usage beyond cache size %d: %+v", s.CacheSize4K, u)
	}
	if want := uint64(c.NumLines()) * uint64(c.LineSize()/4096); s.CacheSize4K != want {
		t.Fatalf("cache size %d, want %d", s.CacheSize4K, want)
	}
}
