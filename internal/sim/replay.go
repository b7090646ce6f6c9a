package sim

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"blockcache/internal/bdev/null"
	"blockcache/internal/ocf"
)

// Policy is one combination of the engine's policies to replay a trace
// under.
type Policy struct {
	Mode      ocf.Mode
	Promotion ocf.PromotionKind
	Cutoff    ocf.SeqCutoffPolicy
	// Cleaning matters in write-back only; write-through replays ignore it
	// (nothing is ever dirty).
	Cleaning ocf.CleaningKind
}

// String names the policy as mode/promotion/cutoff[/cleaning].
func (p Policy) String() string {
	s := fmt.Sprintf("%s/%s/%s", p.Mode, p.Promotion, p.Cutoff)
	if p.Mode == ocf.ModeWB {
		s += "/" + p.Cleaning.String()
	}
	return s
}

// CleaningName is the cleaning policy's name, or "-" in write-through.
func (p Policy) CleaningName() string {
	if p.Mode != ocf.ModeWB {
		return "-"
	}
	return p.Cleaning.String()
}

// Policies lists the combinations `blockcache sim` evaluates: wt and wb;
// promotion always and nhit; sequential cutoff never, full and always; and
// in wb, cleaning alru, acp and nop. 24 in all.
func Policies() []Policy {
	var out []Policy
	for _, mode := range []ocf.Mode{ocf.ModeWT, ocf.ModeWB} {
		for _, prom := range []ocf.PromotionKind{ocf.PromoteAlwaysKind, ocf.PromoteNHitKind} {
			for _, cut := range []ocf.SeqCutoffPolicy{ocf.SeqCutoffNever, ocf.SeqCutoffFull, ocf.SeqCutoffAlways} {
				if mode != ocf.ModeWB {
					out = append(out, Policy{Mode: mode, Promotion: prom, Cutoff: cut, Cleaning: ocf.CleanNOP})
					continue
				}
				for _, cl := range []ocf.CleaningKind{ocf.CleanALRU, ocf.CleanACP, ocf.CleanNOP} {
					out = append(out, Policy{Mode: mode, Promotion: prom, Cutoff: cut, Cleaning: cl})
				}
			}
		}
	}
	return out
}

// Config sizes the simulated cache.
type Config struct {
	// CacheBytes is the cache device's size, its metadata area included (the
	// engine fits as many lines as it can after it).
	CacheBytes int64
	// LineBytes is the cache line size; 0 means ocf.DefaultLineSize.
	LineBytes int64
	// Outcomes keeps every request's outcome in Result.Outcomes.
	Outcomes bool

	// everyStep runs every acp wake-up, even those that cannot clean
	// anything (tests of the skipping).
	everyStep bool
}

// skipCheckSteps: while acp's steps run, how often the replay checks
// whether it may skip to the next request.
const skipCheckSteps = 64

// maxTraceSeconds bounds a trace's duration: its times become
// time.Durations (292 years at most), and cleaning steps follow them.
const maxTraceSeconds = 1e9

// Outcome is how the engine served one request.
type Outcome uint8

// The outcomes, as the engine's statistics classify requests.
const (
	OutcomeHit  Outcome = iota // rd_hits or wr_hits
	OutcomeMiss                // a partial or full miss, served through the cache
	OutcomePT                  // pass-through: rd_pt or wr_pt
)

// Result is one replay of a trace under one policy.
type Result struct {
	Policy Policy
	// Lines is the number of cache lines of the cache replayed on.
	Lines int
	// Stats are the cache's statistics after the last request (no flush
	// follows: Usage.Dirty is what is left dirty).
	Stats ocf.Stats
	// LineAccesses is the number of (request, line) pairs of the trace, and
	// HitLines those of requests that hit: every line of a hit request was
	// resident, so HitLines is a lower bound of the engine's line hits,
	// comparable with OPT.Hits (equal to request hits when no request spans
	// two lines).
	LineAccesses, HitLines uint64
	// CleanSteps is how many times the cleaner woke up (acp wake-ups
	// skipped while nothing was dirty included); Cleaned the lines it wrote
	// back.
	CleanSteps, Cleaned uint64
	// Outcomes has one entry per request when Config.Outcomes is set.
	Outcomes []Outcome
}

// Reads is the number of read requests, pass-through ones included.
func (r *Result) Reads() uint64 { return r.Stats.Requests.RdTotal + r.Stats.Requests.RdPT }

// ReadHitRatio is read hits over every read request.
func (r *Result) ReadHitRatio() float64 { return ratio(r.Stats.Requests.RdHits, r.Reads()) }

// HitRatio is read and write hits over every request.
func (r *Result) HitRatio() float64 {
	q := &r.Stats.Requests
	return ratio(q.RdHits+q.WrHits, q.Total)
}

// LineHitRatio is HitLines / LineAccesses.
func (r *Result) LineHitRatio() float64 { return ratio(r.HitLines, r.LineAccesses) }

// PTRatio is the share of requests served pass-through.
func (r *Result) PTRatio() float64 {
	q := &r.Stats.Requests
	return ratio(q.RdPT+q.WrPT, q.Total)
}

// fakeClock is the time the replay has reached.
type fakeClock struct{ ns atomic.Int64 }

// simEpoch is the fake clock's start: any fixed time will do.
var simEpoch = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

func (c *fakeClock) Now() time.Time  { return simEpoch.Add(time.Duration(c.ns.Load())) }
func (c *fakeClock) set(t time.Time) { c.ns.Store(int64(t.Sub(simEpoch))) }

// at is the fake time of a trace time.
func at(seconds float64) time.Time {
	return simEpoch.Add(time.Duration(seconds * float64(time.Second)))
}

func (c Config) lineBytes() int64 {
	if c.LineBytes == 0 {
		return ocf.DefaultLineSize
	}
	return c.LineBytes
}

// coreBytesFor is the core size a trace needs: past its last byte, rounded
// up to a MiB.
func coreBytesFor(reqs []Request) int64 {
	const mib = 1 << 20
	return max((Summarize(reqs).EndBytes+mib-1)/mib*mib, mib)
}

// Replay runs reqs through a new cache under policy p: the cache device is a
// null bdev of cfg.CacheBytes (data is irrelevant to hit ratios: reads of it
// return zeroes), the core a null bdev covering the trace, metadata volatile.
// A fake clock follows the trace's times; in write-back, the cleaning policy
// runs (CleanStep) whenever the clock passes its next wake-up, as the
// background cleaner would in real time.
func Replay(reqs []Request, p Policy, cfg Config) (Result, error) {
	if err := Validate(reqs); err != nil {
		return Result{}, err
	}
	if d := Summarize(reqs).DurationSecs; d > maxTraceSeconds {
		return Result{}, fmt.Errorf("%w: it lasts %g s, more than the %g s a replay follows", ErrBadTrace, d, maxTraceSeconds)
	}
	ls := cfg.lineBytes()
	cacheDev, err := null.New("sim-cache", uuid.Nil, SectorBytes, uint64(max(cfg.CacheBytes, 0)/SectorBytes))
	if err != nil {
		return Result{}, fmt.Errorf("cache device of %d bytes: %w", cfg.CacheBytes, err)
	}
	coreDev, err := null.New("sim-core", uuid.Nil, SectorBytes, uint64(coreBytesFor(reqs)/SectorBytes))
	if err != nil {
		return Result{}, fmt.Errorf("core device: %w", err)
	}
	clock := &fakeClock{}
	cleaning := ocf.DefaultCleaningParams()
	cleaning.Kind = p.Cleaning
	promotion := ocf.DefaultPromotionParams()
	promotion.Kind = p.Promotion
	c, err := ocf.New(cacheDev, ocf.Config{
		LineSize:         ls,
		Mode:             p.Mode,
		PromotionParams:  &promotion,
		Cleaning:         &cleaning,
		Clock:            clock,
		VolatileMetadata: true,
	})
	if err != nil {
		return Result{}, fmt.Errorf("cache of %d bytes, %d-byte lines: %w", cfg.CacheBytes, ls, err)
	}
	co, err := c.AddCore(ocf.CoreConfig{Device: coreDev})
	if err != nil {
		return Result{}, err
	}
	cutoff := ocf.DefaultSeqCutoffParams()
	cutoff.Policy = p.Cutoff
	if err := co.SetSeqCutoff(cutoff); err != nil {
		return Result{}, err
	}

	res := Result{Policy: p, Lines: c.NumLines()}
	if cfg.Outcomes {
		res.Outcomes = make([]Outcome, 0, len(reqs))
	}
	maxLen := int64(0)
	for _, r := range reqs {
		maxLen = max(maxLen, r.Length)
	}
	buf := make([]byte, maxLen)
	clean := p.Mode == ocf.ModeWB // nothing is dirty in write-through
	// acp wakes up every 10 ms. Its steps do nothing while no line is
	// dirty, and only requests dirty lines, so over a long gap between
	// requests with nothing dirty, whole periods are skipped at once (the
	// wake-ups keep their phase; results are those of running every step).
	skipIdle := p.Cleaning == ocf.CleanACP && !cfg.everyStep
	acpPeriod := max(cleaning.ACP.WakeUp, time.Millisecond)
	nextClean := simEpoch
	prev := co.Stats().Requests
	for i, r := range reqs {
		now := at(r.Time)
		for steps := 0; clean && !nextClean.After(now); steps++ {
			if skipIdle && steps%skipCheckSteps == 0 && now.Sub(nextClean) >= skipCheckSteps*acpPeriod && c.Stats().Usage.Dirty == 0 {
				k := now.Sub(nextClean) / acpPeriod
				nextClean = nextClean.Add(k * acpPeriod)
				res.CleanSteps += uint64(k)
			}
			clock.set(nextClean)
			n, wait, err := c.CleanStep(nextClean)
			if err != nil {
				return res, fmt.Errorf("request %d: cleaning at %v: %w", i, nextClean.Sub(simEpoch), err)
			}
			res.CleanSteps++
			res.Cleaned += uint64(n)
			nextClean = nextClean.Add(max(wait, time.Millisecond))
		}
		clock.set(now)
		b := buf[:r.Length]
		if r.Op == Read {
			err = co.ReadAt(b, r.Offset)
		} else {
			err = co.WriteAt(b, r.Offset, false)
		}
		if err != nil {
			return res, fmt.Errorf("request %d (%c %d+%d): %w", i, r.Op, r.Offset, r.Length, err)
		}
		cur := co.Stats().Requests
		lines := uint64((r.End()+ls-1)/ls - r.Offset/ls)
		res.LineAccesses += lines
		out := OutcomeMiss
		switch {
		case cur.RdHits+cur.WrHits > prev.RdHits+prev.WrHits:
			out = OutcomeHit
			res.HitLines += lines
		case cur.RdPT+cur.WrPT > prev.RdPT+prev.WrPT:
			out = OutcomePT
		}
		if cfg.Outcomes {
			res.Outcomes = append(res.Outcomes, out)
		}
		prev = cur
	}
	res.Stats = c.Stats()
	return res, nil
}

// Report is a trace evaluated under several policies, with its optimum.
type Report struct {
	Trace      Summary
	CacheBytes int64
	LineBytes  int64
	Lines      int
	OPT        OPT
	Results    []Result
}

// Evaluate replays reqs under every policy (in parallel, on up to workers
// goroutines; 0 means one) and computes Belady's optimum for the cache's
// exact number of lines.
func Evaluate(reqs []Request, policies []Policy, cfg Config, workers int) (Report, error) {
	if err := Validate(reqs); err != nil {
		return Report{}, err
	}
	lines, err := CacheLines(cfg)
	if err != nil {
		return Report{}, err
	}
	rep := Report{Trace: Summarize(reqs), CacheBytes: cfg.CacheBytes, LineBytes: cfg.lineBytes(), Lines: lines, Results: make([]Result, len(policies))}
	errs := make([]error, len(policies))
	jobs := make(chan int)
	var wg sync.WaitGroup
	for range max(workers, 1) {
		wg.Go(func() {
			for i := range jobs {
				rep.Results[i], errs[i] = Replay(reqs, policies[i], cfg)
			}
		})
	}
	for i := range policies {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			return rep, fmt.Errorf("replay %s: %w", policies[i], err)
		}
		if got := rep.Results[i].Lines; got != lines {
			return rep, fmt.Errorf("replay %s: the cache had %d lines, %d expected", policies[i], got, lines)
		}
	}
	if rep.OPT, err = Belady(reqs, rep.LineBytes, lines); err != nil {
		return rep, err
	}
	return rep, nil
}

// CacheLines is the number of lines the engine fits on a cache device of
// cfg: it builds one and asks it (Cache.NumLines).
func CacheLines(cfg Config) (int, error) {
	dev, err := null.New("sim-cache", uuid.Nil, SectorBytes, uint64(max(cfg.CacheBytes, 0)/SectorBytes))
	if err != nil {
		return 0, fmt.Errorf("cache device of %d bytes: %w", cfg.CacheBytes, err)
	}
	c, err := ocf.New(dev, ocf.Config{LineSize: cfg.lineBytes(), VolatileMetadata: true})
	if err != nil {
		return 0, fmt.Errorf("cache of %d bytes, %d-byte lines: %w", cfg.CacheBytes, cfg.lineBytes(), err)
	}
	return c.NumLines(), nil
}
