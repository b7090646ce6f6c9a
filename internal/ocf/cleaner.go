package ocf

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Background cleaning (engine.md, Cleaning). The decisions are made by
// CleanStep, which takes the time as an argument and says when it wants to
// run next; the goroutine started by StartCleaner only calls it on a timer,
// so tests drive the policies with a fake clock and no sleeps.

// CleaningKind names a cleaning policy.
type CleaningKind uint8

// The policies; the numbers are stored on disk and must never change.
const (
	CleanALRU CleaningKind = iota // idle-time cleaning of stale lines (default)
	CleanACP                      // continuous cleaning, densest chunks first
	CleanNOP                      // no background cleaning
	numCleaningKinds
)

var cleaningNames = [numCleaningKinds]string{"alru", "acp", "nop"}

func (k CleaningKind) String() string {
	if k < numCleaningKinds {
		return cleaningNames[k]
	}
	return fmt.Sprintf("CleaningKind(%d)", uint8(k))
}

// ParseCleaningKind parses alru, acp or nop.
func ParseCleaningKind(s string) (CleaningKind, error) {
	for i, n := range cleaningNames {
		if n == s {
			return CleaningKind(i), nil
		}
	}
	return 0, fmt.Errorf("cleaning policy %q: %w (want alru, acp or nop)", s, ErrInvalidConfig)
}

// ALRUParams are the alru policy's parameters.
type ALRUParams struct {
	WakeUp            time.Duration // between cleaning rounds; 0..3600 s
	StalenessTime     time.Duration // how long a line must be dirty; 1..3600 s
	FlushMaxBuffers   uint32        // lines per round; 1..10000
	ActivityThreshold time.Duration // idle time before cleaning; 0..1000 s
	// MaxDirtyRatio is the share of the cache's lines, in percent, that
	// may be dirty: above it the cleaner writes back the least recently
	// used dirty lines, busy or idle, until the share is back at it
	// (pressure cleaning, cleanPressure). 0..100; 100 turns it off (OCF's
	// default).
	MaxDirtyRatio uint32
}

// ACPParams are the acp policy's parameters.
type ACPParams struct {
	WakeUp          time.Duration // between rounds; 0..10 s
	FlushMaxBuffers uint32        // lines per round; 1..10000
}

// CleaningParams choose the cleaning policy and hold every policy's
// parameters (kept when the policy changes).
type CleaningParams struct {
	Kind CleaningKind
	ALRU ALRUParams
	ACP  ACPParams
	// MaxInflight bounds the lines cleaning writes back to the cores at
	// once: the background policies and flushes (a miss writing back its
	// own victims is foreground IO and is not counted). 1..1024.
	MaxInflight uint32
}

// Defaults that are blockcache's rather than OCF's: the dirty-ratio target,
// chosen by measurement (engine.md, Cleaning; OCF's is 100, off), and a
// quarter of a default queue depth (128) in flight.
const (
	defaultMaxDirtyRatio       = 80
	defaultCleaningMaxInflight = 32
	maxCleaningInflight        = 1024
)

// DefaultCleaningParams are a new cache's: OCF's (alru, 20 s, 120 s, 100
// lines, 10 s; acp 10 ms, 128 lines), but for MaxDirtyRatio (80) and
// MaxInflight (32).
func DefaultCleaningParams() CleaningParams {
	return CleaningParams{
		Kind: CleanALRU,
		ALRU: ALRUParams{WakeUp: 20 * time.Second, StalenessTime: 120 * time.Second, FlushMaxBuffers: 100, ActivityThreshold: 10 * time.Second,
			MaxDirtyRatio: defaultMaxDirtyRatio},
		ACP:         ACPParams{WakeUp: 10 * time.Millisecond, FlushMaxBuffers: 128},
		MaxInflight: defaultCleaningMaxInflight,
	}
}

// Validate checks the policy and every parameter against OCF's ranges
// (whole seconds and milliseconds: a fraction below the unit is not
// checked) and returns a *ParamError for the first out of range.
func (p CleaningParams) Validate() error {
	const alru, acp = "cleaning alru", "cleaning acp"
	return checkParams(
		paramCheck{"cleaning", "policy", int64(p.Kind), 0, int64(numCleaningKinds) - 1, ""},
		paramCheck{alru, "wake_up", int64(p.ALRU.WakeUp / time.Second), 0, 3600, "s"},
		paramCheck{alru, "staleness_time", int64(p.ALRU.StalenessTime / time.Second), 1, 3600, "s"},
		paramCheck{alru, "flush_max_buffers", int64(p.ALRU.FlushMaxBuffers), 1, 10000, ""},
		paramCheck{alru, "activity_threshold", int64(p.ALRU.ActivityThreshold / time.Millisecond), 0, 1000000, "ms"},
		paramCheck{alru, "max_dirty_ratio", int64(p.ALRU.MaxDirtyRatio), 0, 100, "%"},
		paramCheck{acp, "wake_up", int64(p.ACP.WakeUp / time.Millisecond), 0, 10000, "ms"},
		paramCheck{acp, "flush_max_buffers", int64(p.ACP.FlushMaxBuffers), 1, 10000, ""},
		paramCheck{"cleaning", "max_inflight", int64(p.MaxInflight), 1, maxCleaningInflight, ""},
	)
}

// acpChunkBytes is the span of core the acp policy ranks by dirtiness, as
// OCF's ACP_CHUNK_SIZE.
const acpChunkBytes = 100 << 20

// idleWait is how long an idle cleaner (nop, nothing dirty) sleeps before
// looking again; a parameter change wakes it at once.
const idleWait = time.Minute

// Pressure cleaning (ALRUParams.MaxDirtyRatio) paces itself by how far
// the dirty lines are above the target: it writes back one line at a time
// just above it, and MaxInflight at once from pressureBandPct percent of
// the cache's lines above it on, in proportion in between. A step writes
// back a few lines per line in flight; the cleaner steps again at once
// while above the target, and looks every pressurePoll otherwise.
const (
	pressureBandPct   = 5
	pressureStepLines = 4 // lines a step writes back per line in flight
	pressurePoll      = 100 * time.Millisecond
	pressureRetryWait = time.Second // after a failed write-back
)

// cleanerState is the background cleaner's state. params is guarded by mu;
// lastIO, lastActive and lastRound by step, which serialises CleanStep.
type cleanerState struct {
	mu     sync.Mutex
	params CleaningParams

	step       sync.Mutex
	lastIO     uint64    // IO count seen by the last step
	lastActive time.Time // when the IO count last changed
	lastRound  time.Time // alru's last idle round since the cache was last active; zero: none
	// poll replaces pressurePoll when not zero (tests); set before the
	// cleaner starts.
	poll time.Duration

	wake chan struct{} // a parameter change
	stop chan struct{}
	done chan struct{}
}

// Cleaning returns the cache's cleaning parameters.
func (c *Cache) Cleaning() CleaningParams {
	c.cleaner.mu.Lock()
	defer c.cleaner.mu.Unlock()
	return c.cleaner.params
}

// SetCleaning validates p, changes the cleaning policy and parameters to
// it and records them in the metadata; a running cleaner picks them up at
// once. If the metadata cannot be written, the old parameters are put
// back.
func (c *Cache) SetCleaning(p CleaningParams) error {
	if err := p.Validate(); err != nil {
		return err
	}
	var old CleaningParams
	if err := c.changeRecorded(func() { old = c.swapCleaning(p) }, func() { c.swapCleaning(old) }); err != nil {
		return fmt.Errorf("set cleaning policy: %w", err)
	}
	return nil
}

// swapCleaning puts p in force, wakes the cleaner, and returns the
// parameters it replaced.
func (c *Cache) swapCleaning(p CleaningParams) CleaningParams {
	c.cleaner.mu.Lock()
	old := c.cleaner.params
	c.cleaner.params = p
	c.cleaner.mu.Unlock()
	select {
	case c.cleaner.wake <- struct{}{}:
	default:
	}
	return old
}

// ioCount is the number of requests served so far, from the statistics:
// the cleaner's activity signal, at no cost to the data path.
func (c *Cache) ioCount() uint64 {
	var n uint64
	for _, co := range c.Cores() {
		n += co.stats.requests()
	}
	return n
}

// CleanStep runs the cleaning policy once at time now and returns how many
// lines it cleaned and how long to wait before the next step. Concurrent
// calls run one after the other.
func (c *Cache) CleanStep(now time.Time) (cleaned int, next time.Duration, err error) {
	p := c.Cleaning()
	st := &c.cleaner
	st.step.Lock()
	defer st.step.Unlock()
	if n := c.ioCount(); n != st.lastIO || st.lastActive.IsZero() {
		st.lastIO, st.lastActive = n, now
	}
	switch p.Kind {
	case CleanALRU:
		if over := c.dirtyOverTarget(p.ALRU.MaxDirtyRatio); over > 0 {
			cleaned, err = c.cleanPressure(over, int(p.MaxInflight))
			switch {
			case err != nil:
				return cleaned, pressureRetryWait, err
			case cleaned == 0:
				return 0, st.pollEvery(), nil // every candidate busy, or detached
			}
			return cleaned, 0, nil
		}
		cleaned, next, err = c.idleRound(now, p.ALRU)
		if p.ALRU.MaxDirtyRatio < 100 {
			next = min(next, st.pollEvery())
		}
		return cleaned, next, err
	case CleanACP:
		cleaned, err = c.cleanDensest(int(p.ACP.FlushMaxBuffers))
		return cleaned, p.ACP.WakeUp, err
	}
	return 0, idleWait, nil
}

// pollEvery is how often a cleaner with a dirty-ratio target looks at the
// ratio while it is not above it.
func (st *cleanerState) pollEvery() time.Duration {
	if st.poll > 0 {
		return st.poll
	}
	return pressurePoll
}

// idleRound is alru's idle cleaning: once the cache has been idle for the
// activity threshold, a round of cleanStale every wake-up. The caller
// holds cleaner.step.
func (c *Cache) idleRound(now time.Time, p ALRUParams) (cleaned int, next time.Duration, err error) {
	st := &c.cleaner
	idle := now.Sub(st.lastActive)
	if idle < p.ActivityThreshold {
		st.lastRound = time.Time{}
		return 0, p.ActivityThreshold - idle, nil
	}
	if since := now.Sub(st.lastRound); !st.lastRound.IsZero() && since < p.WakeUp {
		return 0, p.WakeUp - since, nil
	}
	st.lastRound = now
	cleaned, err = c.cleanStale(now, p)
	return cleaned, p.WakeUp, err
}

// dirtyOverTarget is how many dirty lines there are above ratio percent of
// the cache's lines (0 if not above, or ratio is 100).
func (c *Cache) dirtyOverTarget(ratio uint32) int {
	if ratio >= 100 {
		return 0
	}
	limit := c.layout.numLines * int(ratio) / 100
	c.mu.Lock()
	defer c.mu.Unlock()
	return max(0, c.mu.lists[listDirty].n-limit)
}

// cleanPressure writes back least recently used dirty lines when over
// lines are dirty above the target: up to pressureStepLines times as many
// lines as it may have in flight, paced by over (see pressureBandPct).
// Each of that many workers claims one line at a time, writes it back with
// FUA and marks it clean, so a slow write holds up no other; the metadata
// is written once at the end. Lines some request holds, or another
// cleaner claimed, are passed over.
func (c *Cache) cleanPressure(over, maxInflight int) (int, error) {
	band := max(1, c.layout.numLines*pressureBandPct/100)
	inflight := min(maxInflight, max(1, (over*maxInflight+band-1)/band))
	quota := int64(min(over, pressureStepLines*inflight))
	var taken, cleaned atomic.Int64
	var mu sync.Mutex
	var errs []error
	work := func() {
		for taken.Add(1) <= quota {
			c.mu.Lock()
			cands := c.claimDirtyLocked(nil, 1, nil)
			c.mu.Unlock()
			if len(cands) == 0 {
				return
			}
			n, err := c.cleanClaimed(cands, 1)
			cleaned.Add(int64(n))
			if err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
				return
			}
		}
	}
	var wg sync.WaitGroup
	for range inflight - 1 {
		wg.Go(work)
	}
	work()
	wg.Wait()
	n := int(cleaned.Load())
	if n == 0 && len(errs) == 0 {
		return 0, nil
	}
	if err := c.syncMetadata(false); err != nil {
		errs = append(errs, err)
	}
	return n, errors.Join(errs...)
}

// cleaningInflight is CleaningParams.MaxInflight.
func (c *Cache) cleaningInflight() int {
	return max(1, int(c.Cleaning().MaxInflight))
}

// cleanStale cleans up to FlushMaxBuffers lines dirty for at least
// StalenessTime, those dirty the longest first. The dirty list is in LRU
// order (for eviction), so it is scanned whole: once a wake-up (20 s by
// default), a few nanoseconds a dirty line.
func (c *Cache) cleanStale(now time.Time, p ALRUParams) (int, error) {
	if now.Sub(c.epoch) < p.StalenessTime {
		return 0, nil
	}
	c.mu.Lock()
	limit := c.secondsAt(now.Add(-p.StalenessTime))
	var stale []lineIdx
	lines := c.mu.lines
	for j := c.mu.lists[listDirty].tail; j != noLine; j = lines[j].prev {
		if lines[j].dirtySince() <= limit {
			stale = append(stale, j)
		}
	}
	slices.SortStableFunc(stale, func(a, b lineIdx) int { return int(lines[a].dirtySince()) - int(lines[b].dirtySince()) })
	var cands []cleanCandidate
	for _, j := range stale[:min(len(stale), int(p.FlushMaxBuffers))] {
		cands = c.appendCandidateLocked(cands, j)
	}
	c.mu.Unlock()
	return c.cleanAndSync(cands)
}

// cleanDensest cleans up to limit dirty lines of the core chunk with the
// most dirty lines.
func (c *Cache) cleanDensest(limit int) (int, error) {
	c.mu.Lock()
	var best uint64
	most := int32(0)
	for k, n := range c.mu.chunkDirty {
		if n > most || (n == most && k < best) {
			best, most = k, n
		}
	}
	if most == 0 {
		c.mu.Unlock()
		return 0, nil
	}
	core, chunk := CoreID(best>>32), uint32(best)
	perChunk := uint32(acpChunkBytes / c.layout.lineSize)
	var cands []cleanCandidate
	for l := chunk * perChunk; l < (chunk+1)*perChunk && len(cands) < limit && len(cands) < int(most); l++ {
		if i := c.mu.mapping.lookup(c.mu.lines, core, l); i != noLine && c.mu.lines[i].list() == listDirty {
			cands = c.appendCandidateLocked(cands, i)
		}
	}
	c.mu.Unlock()
	return c.cleanAndSync(cands)
}

// cleanAndSync cleans cands and writes the metadata that lets them be
// reused.
func (c *Cache) cleanAndSync(cands []cleanCandidate) (int, error) {
	if len(cands) == 0 {
		return 0, nil
	}
	n, err := c.cleanLines(cands, false)
	if serr := c.syncMetadata(false); err == nil {
		err = serr
	}
	return n, err
}

// chunkDirtyLocked adds d to the dirty-line count of ln's acp chunk.
func (c *Cache) chunkDirtyLocked(ln *line, d int32) {
	k := uint64(ln.core())<<32 | uint64(ln.coreLine())/uint64(acpChunkBytes/c.layout.lineSize)
	if n := c.mu.chunkDirty[k] + d; n > 0 {
		c.mu.chunkDirty[k] = n
	} else {
		delete(c.mu.chunkDirty, k)
	}
}

// secondsLocked is now in the cache's seconds (dirtySince's unit).
func (c *Cache) secondsLocked() uint32 { return c.secondsAt(c.clock.Now()) }

func (c *Cache) secondsAt(t time.Time) uint32 {
	d := t.Sub(c.epoch)
	if d < 0 {
		return 0
	}
	return uint32(d / time.Second)
}

// StartCleaner runs the cleaning policy in the background until Stop.
func (c *Cache) StartCleaner() {
	st := &c.cleaner
	st.mu.Lock()
	if st.stop != nil {
		st.mu.Unlock()
		return
	}
	stop, done := make(chan struct{}), make(chan struct{})
	st.stop, st.done = stop, done
	st.mu.Unlock()
	go func() {
		defer close(done)
		for {
			_, next, _ := c.CleanStep(c.clock.Now())
			t := time.NewTimer(next)
			select {
			case <-t.C:
			case <-st.wake:
				t.Stop()
			case <-stop:
				t.Stop()
				return
			}
		}
	}()
}

// stopCleaner stops the background cleaner, if any, and waits for it.
func (c *Cache) stopCleaner() {
	st := &c.cleaner
	st.mu.Lock()
	stop, done := st.stop, st.done
	st.stop = nil
	st.mu.Unlock()
	if stop != nil {
		close(stop)
		<-done
	}
}

// recordedPressure decodes the superblock slots of MaxDirtyRatio (stored
// plus one) and MaxInflight; a 0, from metadata written before the slots
// existed, loads as today's default.
func recordedPressure(ratioSlot, inflightSlot uint32) (ratio, inflight uint32) {
	ratio, inflight = defaultMaxDirtyRatio, defaultCleaningMaxInflight
	if ratioSlot != 0 {
		ratio = ratioSlot - 1
	}
	if inflightSlot != 0 {
		inflight = inflightSlot
	}
	return ratio, inflight
}
