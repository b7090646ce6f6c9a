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
func TestModel(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		lineSize := rapid.SampledFrom([]int64{4 << 10, 8 << 10, 16 << 10, 32 << 10, 64 << 10}).Draw(rt, "lineSize")
		mode := rapid.SampledFrom(ocf.Modes()).Draw(rt, "mode")
		nCores := rapid.IntRange(1, 3).Draw(rt, "cores")
		lines := rapid.IntRange(1, 12).Draw(rt, "lines")
		coreBytes := lineSize * int64(rapid.IntRange(2, 24).Draw(rt, "coreLines"))
		env := ocftest.New(rt, ocftest.Options{Lines: lines, LineSize: lineSize, Mode: mode, Cores: nCores, CoreBytes: coreBytes})
		m := newModel(env, coreBytes)
		if rapid.Bool().Draw(rt, "backgroundCleaner") {
			// acp every millisecond, racing with the operations below.
			p := ocf.DefaultCleaningParams()
			p.Kind, p.ACP.WakeUp = ocf.CleanACP, time.Millisecond
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
			got := make([]byte, n)
			if err := m.env.Cores[core].ReadAt(got, off); err != nil {
				t.Fatalf("read core %d at %d len %d: %v", core, off, n, err)
			}
			if !bytes.Equal(got, m.want[core][off:off+n]) {
				t.Fatalf("read core %d at %d len %d (mode %s): %s", core, off, n, c.Mode(), firstDiff(got, m.want[core][off:off+n]))
			}
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
				TriggerThreshold:   uint32(rapid.IntRange(0, 100).Draw(t, "trigger")), TriggerSet: true}
			if err := c.SetPromotion(pp); err != nil {
				t.Fatalf("set promotion: %v", err)
			}
			sp := ocf.SeqCutoffParams{Policy: rapid.SampledFrom([]ocf.SeqCutoffPolicy{ocf.SeqCutoffFull, ocf.SeqCutoffAlways, ocf.SeqCutoffNever}).Draw(t, "seqPolicy"),
				ThresholdBytes: uint32(rapid.IntRange(1, 16).Draw(t, "seqKiB")) * 1024, PromotionCount: uint32(rapid.IntRange(1, 3).Draw(t, "seqCount"))}
			for _, co := range m.env.Cores {
				if err := co.SetSeqCutoff(sp); err != nil {
					t.Fatalf("set seq cutoff: %v", err)
				}
			}
		},
		"cleanStep": func(t *rapid.T) {
			// One round of alru or acp now (alru with no staleness or
			// idleness required), from the test's goroutine.
			p := ocf.DefaultCleaningParams()
			p.Kind = rapid.SampledFrom([]ocf.CleaningKind{ocf.CleanALRU, ocf.CleanACP, ocf.CleanNOP}).Draw(t, "cleaning")
			p.ALRU.StalenessTime, p.ALRU.ActivityThreshold = time.Second, 0
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
			t.Fatalf("core %d device differs from model %s: %s", i, when, firstDiff(got, m.want[i]))
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

func firstDiff(got, want []byte) string {
	for i := range got {
		if got[i] != want[i] {
			return fmt.Sprintf("first difference at byte %d (sector %d): got %#x want %#x", i, i/512, got[i], want[i])
		}
	}
	return "equal"
}
