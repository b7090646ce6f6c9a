package sim

import (
	"reflect"
	"testing"

	"pgregory.net/rapid"

	"blockcache/internal/ocf"
)

func TestPolicies(t *testing.T) {
	ps := Policies()
	if len(ps) != 24 {
		t.Fatalf("%d policies, want 24", len(ps))
	}
	seen := map[string]bool{}
	for _, p := range ps {
		if seen[p.String()] {
			t.Errorf("%s twice", p)
		}
		seen[p.String()] = true
	}
	for _, name := range []string{"wt/always/never", "wt/nhit/full", "wb/always/always/acp", "wb/nhit/never/nop", "wb/always/full/alru"} {
		if !seen[name] {
			t.Errorf("no %s in %v", name, ps)
		}
	}
}

// partStats splits a replay's outcomes between requests below split (the
// random part of a scan trace) and the rest (the scans).
type partStats struct {
	randomReqs, randomHits int
	scanReqs, scanPT       int
}

func (s partStats) randomHitRatio() float64 { return float64(s.randomHits) / float64(s.randomReqs) }

func splitOutcomes(reqs []Request, res Result, split int64) partStats {
	var s partStats
	for i, r := range reqs {
		if r.Offset < split {
			s.randomReqs++
			if res.Outcomes[i] == OutcomeHit {
				s.randomHits++
			}
			continue
		}
		s.scanReqs++
		if res.Outcomes[i] == OutcomePT {
			s.scanPT++
		}
	}
	return s
}

// scanTestTrace is a small scan trace: 4 MiB working set, 4 MiB scans of
// 64 KiB requests every 1000 random requests, for a 2 MiB cache (478 lines).
func scanTestTrace(t *testing.T) ([]Request, GenParams, Config) {
	t.Helper()
	p := smallGenParams()
	p.ScanBytes = 4 << 20
	p.ScanEvery = 1000
	reqs, err := Generate(GenScan, p)
	if err != nil {
		t.Fatal(err)
	}
	return reqs, p, Config{CacheBytes: 2 << 20, Outcomes: true}
}

func replay(t *testing.T, reqs []Request, p Policy, cfg Config) Result {
	t.Helper()
	res, err := Replay(reqs, p, cfg)
	if err != nil {
		t.Fatalf("%s: %v", p, err)
	}
	return res
}

// TestSeqCutoffBypassesScans: with sequential cutoff always, scans go
// pass-through from their second request on (with the 1 KiB default
// threshold, any request that continues a stream reaches it), so fewer
// lines are inserted and the random part hits more than with cutoff never.
func TestSeqCutoffBypassesScans(t *testing.T) {
	reqs, p, cfg := scanTestTrace(t)
	for _, mode := range []ocf.Mode{ocf.ModeWT, ocf.ModeWB} {
		never := replay(t, reqs, Policy{Mode: mode, Cutoff: ocf.SeqCutoffNever, Cleaning: ocf.CleanACP}, cfg)
		always := replay(t, reqs, Policy{Mode: mode, Cutoff: ocf.SeqCutoffAlways, Cleaning: ocf.CleanACP}, cfg)
		n, a := splitOutcomes(reqs, never, p.WorkingSetBytes), splitOutcomes(reqs, always, p.WorkingSetBytes)
		if n.scanPT != 0 {
			t.Errorf("%s: cutoff never: %d scan requests pass-through", mode, n.scanPT)
		}
		// All but the first request of each scan bypasses the cache.
		cut := float64(p.ScanBytes-p.StreamRequestBytes) / float64(p.ScanBytes)
		if float64(a.scanPT) < 0.95*cut*float64(a.scanReqs) {
			t.Errorf("%s: cutoff always: %d of %d scan requests pass-through, want about %.0f%%", mode, a.scanPT, a.scanReqs, 100*cut)
		}
		if a.randomReqs != n.randomReqs || a.randomReqs == 0 {
			t.Fatalf("random parts of %d and %d requests", a.randomReqs, n.randomReqs)
		}
		if always.Stats.Blocks.CacheWr >= never.Stats.Blocks.CacheWr {
			t.Errorf("%s: cutoff always wrote %d blocks to the cache, never %d", mode, always.Stats.Blocks.CacheWr, never.Stats.Blocks.CacheWr)
		}
		if a.randomHitRatio() <= n.randomHitRatio()+0.02 {
			t.Errorf("%s: random part's hit ratio %.3f with cutoff always, %.3f with never", mode, a.randomHitRatio(), n.randomHitRatio())
		}
		t.Logf("%s: random part hits %.3f (never) -> %.3f (always); scan pass-through %d/%d; cache writes %d -> %d", mode,
			n.randomHitRatio(), a.randomHitRatio(), a.scanPT, a.scanReqs, never.Stats.Blocks.CacheWr, always.Stats.Blocks.CacheWr)
	}
}

// TestNHitReducesPollution: nhit does not insert lines seen once, so scans
// (read once) stay out of the cache and the random part hits more than with
// promotion always.
func TestNHitReducesPollution(t *testing.T) {
	reqs, p, cfg := scanTestTrace(t)
	always := replay(t, reqs, Policy{Mode: ocf.ModeWT, Promotion: ocf.PromoteAlwaysKind, Cutoff: ocf.SeqCutoffNever}, cfg)
	nhit := replay(t, reqs, Policy{Mode: ocf.ModeWT, Promotion: ocf.PromoteNHitKind, Cutoff: ocf.SeqCutoffNever}, cfg)
	a, n := splitOutcomes(reqs, always, p.WorkingSetBytes), splitOutcomes(reqs, nhit, p.WorkingSetBytes)
	if a.scanPT != 0 || float64(n.scanPT) < 0.9*float64(n.scanReqs) {
		t.Errorf("scan requests pass-through: %d of %d with always, %d of %d with nhit", a.scanPT, a.scanReqs, n.scanPT, n.scanReqs)
	}
	if nhit.Stats.Blocks.CacheWr*2 >= always.Stats.Blocks.CacheWr {
		t.Errorf("nhit wrote %d blocks to the cache, always %d", nhit.Stats.Blocks.CacheWr, always.Stats.Blocks.CacheWr)
	}
	if n.randomHitRatio() <= a.randomHitRatio()+0.02 {
		t.Errorf("random part's hit ratio %.3f with nhit, %.3f with always", n.randomHitRatio(), a.randomHitRatio())
	}
	t.Logf("random part hits %.3f (always) -> %.3f (nhit); cache writes %d -> %d",
		a.randomHitRatio(), n.randomHitRatio(), always.Stats.Blocks.CacheWr, nhit.Stats.Blocks.CacheWr)
}

// TestCleaningFollowsTraceTime: the fake clock follows the trace, so alru
// cleans a dirty line once it is stale (120 s) and the cache idle (10 s),
// at the next wake-up (every 20 s from the first idle round), and not
// before; nop never cleans.
func TestCleaningFollowsTraceTime(t *testing.T) {
	cfg := Config{CacheBytes: 2 << 20}
	write := Request{Time: 0, Op: Write, Offset: 0, Length: 4096}
	for _, tc := range []struct {
		kind    ocf.CleaningKind
		readAt  float64
		dirty4K uint64
	}{
		// The cleaner looks every 0.1 s (it watches the dirty-ratio
		// target), so the step at 0.1 s sees the write; idle from 10.1 s,
		// rounds at 10.1, 30.1, ... s; the line is stale from 120 s and
		// cleaned by the round at 130.1 s.
		{ocf.CleanALRU, 100, 1},
		{ocf.CleanALRU, 120, 1},
		{ocf.CleanALRU, 130.05, 1},
		{ocf.CleanALRU, 130.2, 0},
		{ocf.CleanALRU, 200, 0},
		{ocf.CleanNOP, 1000, 1},
		{ocf.CleanACP, 1, 0}, // acp cleans within its 10 ms wake-up
	} {
		reqs := []Request{write, {Time: tc.readAt, Op: Read, Offset: 1 << 20, Length: 4096}}
		res := replay(t, reqs, Policy{Mode: ocf.ModeWB, Cleaning: tc.kind, Cutoff: ocf.SeqCutoffNever}, cfg)
		if res.Stats.Usage.Dirty != tc.dirty4K {
			t.Errorf("%s, read at %v s: %d dirty 4K blocks at the end, want %d (%d steps cleaned %d lines)",
				tc.kind, tc.readAt, res.Stats.Usage.Dirty, tc.dirty4K, res.CleanSteps, res.Cleaned)
		}
	}
}

// TestWriteThroughNeverDirty: wt replays leave nothing dirty and never run
// the cleaner; the statistics add up.
func TestWriteThroughNeverDirty(t *testing.T) {
	p := smallGenParams()
	p.Requests = 3000
	reqs, _ := Generate(GenZipf, p)
	res := replay(t, reqs, Policy{Mode: ocf.ModeWT}, Config{CacheBytes: 2 << 20})
	q := res.Stats.Requests
	if res.Stats.Usage.Dirty != 0 || res.CleanSteps != 0 || q.Total != uint64(len(reqs)) || res.Stats.Blocks.CoreWr == 0 {
		t.Fatalf("%+v", res)
	}
	s := Summarize(reqs)
	if res.Reads() != uint64(s.Reads) || q.WrTotal+q.WrPT != uint64(s.Writes) {
		t.Fatalf("reads %d writes %d+%d, trace %+v", res.Reads(), q.WrTotal, q.WrPT, s)
	}
	// Every request is one 4 KiB line: line hits are request hits.
	if res.HitLines != q.RdHits+q.WrHits || res.LineAccesses != uint64(len(reqs)) {
		t.Fatalf("%d hit lines of %d, %d hits", res.HitLines, res.LineAccesses, q.RdHits+q.WrHits)
	}
}

func TestReplayDeterministic(t *testing.T) {
	reqs, _, cfg := scanTestTrace(t)
	reqs = reqs[:5000]
	for _, p := range []Policy{{Mode: ocf.ModeWB, Promotion: ocf.PromoteNHitKind, Cleaning: ocf.CleanALRU}, {Mode: ocf.ModeWB, Cleaning: ocf.CleanACP}} {
		a, b := replay(t, reqs, p, cfg), replay(t, reqs, p, cfg)
		if !reflect.DeepEqual(a, b) {
			t.Errorf("%s: two replays differ:\n%+v\n%+v", p, a.Stats, b.Stats)
		}
	}
}

func TestReplayErrors(t *testing.T) {
	reqs := []Request{{Time: 0, Op: Read, Offset: 0, Length: 4096}}
	if _, err := Replay(reqs, Policy{}, Config{CacheBytes: 4096}); err == nil {
		t.Error("a 4 KiB cache device accepted")
	}
	if _, err := Replay(reqs, Policy{}, Config{CacheBytes: 2 << 20, LineBytes: 3000}); err == nil {
		t.Error("3000-byte lines accepted")
	}
	if _, err := Replay([]Request{{Time: 0, Op: Read, Offset: 1, Length: 512}}, Policy{}, Config{CacheBytes: 2 << 20}); err == nil {
		t.Error("an unaligned request accepted")
	}
	if _, err := Evaluate(reqs, Policies(), Config{CacheBytes: 4096}, 2); err == nil {
		t.Error("Evaluate: a 4 KiB cache device accepted")
	}
}

func TestEvaluate(t *testing.T) {
	p := smallGenParams()
	p.Requests = 2000
	reqs, _ := Generate(GenScan, p)
	cfg := Config{CacheBytes: 2 << 20, LineBytes: 8 << 10}
	rep, err := Evaluate(reqs, Policies(), cfg, 2)
	if err != nil {
		t.Fatal(err)
	}
	lines, err := CacheLines(cfg)
	if err != nil {
		t.Fatal(err)
	}
	opt, _ := Belady(reqs, 8<<10, lines)
	if rep.Lines != lines || rep.OPT != opt || rep.LineBytes != 8<<10 || len(rep.Results) != 24 || rep.Trace != Summarize(reqs) {
		t.Fatalf("report: %d lines (want %d), OPT %+v (want %+v), %d results", rep.Lines, lines, rep.OPT, opt, len(rep.Results))
	}
	for i, r := range rep.Results {
		if r.Policy != Policies()[i] || r.Lines != lines || r.Stats.Requests.Total != uint64(len(reqs)) {
			t.Errorf("result %d: %s, %d lines, %d requests", i, r.Policy, r.Lines, r.Stats.Requests.Total)
		}
		if r.HitLines > opt.Hits {
			t.Errorf("%s: %d line hits, more than OPT's %d", r.Policy, r.HitLines, opt.Hits)
		}
	}
}

// TestEngineBelowOPT: on any trace, under any policy, the engine's line
// hits (those of requests that hit) never exceed Belady's for the cache's
// exact number of lines; when no request spans two lines, its request hit
// ratio never exceeds OPT's either. The engine is one of the policies OPT
// is optimal over: it holds at most NumLines lines and only inserts lines
// being accessed (pass-through, nhit and cutoff being bypasses).
func TestEngineBelowOPT(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		lineBytes := int64(rapid.SampledFrom([]int{4 << 10, 8 << 10, 16 << 10}).Draw(t, "lineBytes"))
		lines := rapid.IntRange(1, 40).Draw(t, "lines")
		cfg := Config{CacheBytes: ocf.DeviceBytesFor(lines, lineBytes), LineBytes: lineBytes}
		p := rapid.SampledFrom(Policies()).Draw(t, "policy")
		span := rapid.IntRange(1, 4*lines).Draw(t, "spanLines") // the core lines the trace touches
		oneLine := rapid.Bool().Draw(t, "oneLine")
		n := rapid.IntRange(1, 300).Draw(t, "requests")
		reqs := make([]Request, n)
		now := 0.0
		sectorsPerLine := lineBytes / SectorBytes
		for i := range reqs {
			now += rapid.SampledFrom([]float64{0, 0, 0.001, 0.5, 12, 30}).Draw(t, "dt")
			op := Read
			if rapid.IntRange(0, 2).Draw(t, "op") == 0 {
				op = Write
			}
			line := int64(rapid.IntRange(0, span-1).Draw(t, "line"))
			var off, length int64
			if oneLine {
				s0 := rapid.Int64Range(0, sectorsPerLine-1).Draw(t, "s0")
				s1 := rapid.Int64Range(s0+1, sectorsPerLine).Draw(t, "s1")
				off, length = line*lineBytes+s0*SectorBytes, (s1-s0)*SectorBytes
			} else {
				off = line*lineBytes + rapid.Int64Range(0, sectorsPerLine-1).Draw(t, "s0")*SectorBytes
				length = rapid.Int64Range(1, 3*sectorsPerLine).Draw(t, "sectors") * SectorBytes
			}
			reqs[i] = Request{Time: now, Op: op, Offset: off, Length: length}
		}
		res, err := Replay(reqs, p, cfg)
		if err != nil {
			t.Fatal(err)
		}
		if res.Lines != lines {
			t.Fatalf("the cache has %d lines, DeviceBytesFor promised %d", res.Lines, lines)
		}
		opt, err := Belady(reqs, lineBytes, res.Lines)
		if err != nil {
			t.Fatal(err)
		}
		if res.LineAccesses != opt.Accesses {
			t.Fatalf("%d line accesses replayed, OPT saw %d", res.LineAccesses, opt.Accesses)
		}
		if res.HitLines > opt.Hits {
			t.Fatalf("%s: %d line hits, OPT %d of %d", p, res.HitLines, opt.Hits, opt.Accesses)
		}
		if q := res.Stats.Requests; oneLine && (res.HitLines != q.RdHits+q.WrHits || res.HitRatio() > opt.HitRatio()) {
			t.Fatalf("%s: hit ratio %.3f (%d hits, %d line hits), OPT %.3f", p, res.HitRatio(), q.RdHits+q.WrHits, res.HitLines, opt.HitRatio())
		}
	})
}

// TestACPSkipExact: skipping acp's wake-ups while nothing is dirty changes
// nothing but the time a replay takes.
func TestACPSkipExact(t *testing.T) {
	p := smallGenParams()
	p.Requests = 3000
	p.BurstRequests = 500
	p.IdleSeconds = 30
	reqs, err := Generate(GenScan, p)
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{CacheBytes: 2 << 20, Outcomes: true}
	slow := cfg
	slow.everyStep = true
	for _, pol := range []Policy{{Mode: ocf.ModeWB, Cleaning: ocf.CleanACP}, {Mode: ocf.ModeWB, Cleaning: ocf.CleanACP, Promotion: ocf.PromoteNHitKind}} {
		a, b := replay(t, reqs, pol, cfg), replay(t, reqs, pol, slow)
		if !reflect.DeepEqual(a, b) {
			t.Errorf("%s: skipping idle steps changed the result:\n%+v\n%+v", pol, a.Stats, b.Stats)
		}
		if a.CleanSteps < uint64(p.IdleSeconds*100*float64(p.Requests/p.BurstRequests-1)) {
			t.Errorf("%s: %d steps", pol, a.CleanSteps)
		}
	}
	// A day between two requests costs nothing.
	long := []Request{{0, Write, 0, 4096}, {86400, Write, 8192, 4096}, {86400.5, Read, 0, 4096}}
	res := replay(t, long, Policy{Mode: ocf.ModeWB, Cleaning: ocf.CleanACP}, cfg)
	if res.Cleaned != 2 || res.Stats.Usage.Dirty != 0 || res.CleanSteps < 8640000 {
		t.Errorf("a day apart: %d lines cleaned in %d steps, %d dirty", res.Cleaned, res.CleanSteps, res.Stats.Usage.Dirty)
	}
	if _, err := Replay([]Request{{0, Read, 0, 512}, {2e9, Read, 0, 512}}, Policy{}, cfg); err == nil {
		t.Error("a trace of 63 years replayed")
	}
}
