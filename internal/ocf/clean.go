package ocf

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"

	"blockcache/internal/bdev"
)

// Cleaning writes dirty sectors back to the core. A batch of lines is locked
// (their stripes exclusively: in ascending order here, or each with TryLock
// when victims are claimed, evict.go), their dirty sectors are copied from
// the cache device to the core, several lines at once, the copies are made
// durable, and only then are the sectors marked clean: a crash at any point
// loses nothing. No lock but the lines' own stripes is held across the core
// writes.

// flushBatchLines is how many lines one cleaning batch writes back.
const flushBatchLines = 128

// canMakeRoom reports whether cleanForRoom could free lines: some are
// dirty, or wait for their metadata.
func (c *Cache) canMakeRoom() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.mu.lists[listDirty].n > 0 || c.mu.metaUrgent || c.mu.lists[listLimbo].n > 0
}

// cleanCandidate is a dirty line chosen for cleaning.
type cleanCandidate struct {
	idx      lineIdx
	core     *Core
	coreLine uint32
	dirty    sectorMask  // dirty at the time the batch locked it
	dev      bdev.Device // the core device at that time
	mark     uint64      // dev's write-back mark before the write (bdev.LossReporter)
	stripe   int         // its stripe, when claimed with TryLock (evict.go)
	err      error
}

// cleanBatch cleans up to limit dirty lines of core co (any core if nil),
// those dirty the longest first. It returns how many lines it cleaned; when
// some failed, the first error (the lines stay dirty).
//
// With cold, the cleaned lines go to the LRU end of the clean list (they
// were the least recently used dirty lines, cleaned to be evicted), and a
// line hit since it was last moved gets a second chance instead, as in
// allocLocked; otherwise they keep their recency at the head.
func (c *Cache) cleanBatch(co *Core, limit int, cold bool) (int, error) {
	cands := make([]cleanCandidate, 0, min(limit, flushBatchLines))
	c.mu.Lock()
	lines := c.mu.lines
	for j := c.mu.lists[listDirty].tail; j != noLine && len(cands) < limit; {
		prev := lines[j].prev
		switch {
		case co != nil && lines[j].core() != co.id:
		case cold && lines[j].takeReferenced():
			c.mu.lists.moveToFront(lines, listDirty, j)
			if prev == noLine {
				continue // j was and is the head: it is next in order
			}
		default:
			cands = c.appendCandidateLocked(cands, j)
		}
		j = prev
	}
	c.mu.Unlock()
	return c.cleanLines(cands, cold)
}

// appendCandidateLocked adds dirty line j to cands unless its core is
// detached (no device to write to).
func (c *Cache) appendCandidateLocked(cands []cleanCandidate, j lineIdx) []cleanCandidate {
	ln := &c.mu.lines[j]
	owner := c.mu.cores[ln.core()]
	if owner.dev == nil {
		return cands
	}
	return append(cands, cleanCandidate{idx: j, core: owner, coreLine: ln.coreLine()})
}

// cleanLines writes back the chosen lines: their stripes are locked, those
// still dirty and mapped as chosen have their dirty sectors copied to the
// core, the cores are flushed, then the sectors are marked clean.
func (c *Cache) cleanLines(cands []cleanCandidate, cold bool) (int, error) {
	if len(cands) == 0 {
		return 0, nil
	}
	lines := c.mu.lines
	stripeIdx := make([]int, 0, len(cands))
	for _, cd := range cands {
		stripeIdx = append(stripeIdx, c.stripes.index(cd.core.id, uint64(cd.coreLine)))
	}

	locked := c.stripes.lockSet(stripeIdx)
	defer c.stripes.unlockSet(locked)

	// Between choosing and locking, a line may have been cleaned, evicted or
	// remapped, and its core detached; keep those still dirty and mapped as
	// chosen, of cores with a device. The device is taken now, under
	// Cache.mu: a detach (RemoveCore without flush) that drained before the
	// stripes were locked here may clear Core.dev at any time. Writing back
	// to a device being detached is harmless: the data is right, and if the
	// device is closed the write fails and the line stays dirty.
	c.mu.Lock()
	kept := cands[:0]
	for _, cd := range cands {
		ln := &lines[cd.idx]
		if ln.list() != listDirty || ln.core() != cd.core.id || ln.coreLine() != cd.coreLine {
			continue
		}
		if cd.dev = cd.core.dev; cd.dev == nil {
			continue
		}
		cd.dirty = ln.dirty
		kept = append(kept, cd)
	}
	cands = kept
	c.mu.Unlock()
	return c.writeBackLines(cands, cold, c.cleaningInflight(), false)
}

// writeBackLines copies the dirty sectors of cands, whose stripes the caller
// holds exclusively, to their cores, at most inflight lines at once; makes
// the copies durable (written with fua, or followed by one flush per core
// written to); then marks the sectors clean. It returns how
// many lines it cleaned; when some failed, their errors (those lines stay
// dirty). Lines whose core lost acknowledged writes before they were
// durable (bdev.ErrWritesLost: a remote core's server restarted) are
// written and flushed once more at once: the data is still here.
//
// With cold, the cleaned lines go to the LRU end of the clean list (they
// were the least recently used dirty lines, cleaned to be evicted);
// otherwise they keep their recency at the head.
func (c *Cache) writeBackLines(cands []cleanCandidate, cold bool, inflight int, fua bool) (int, error) {
	if len(cands) == 0 {
		return 0, nil
	}
	c.writeBackDurably(cands, inflight, fua)
	var again []int
	for i, cd := range cands {
		if errors.Is(cd.err, bdev.ErrWritesLost) {
			again = append(again, i)
		}
	}
	if len(again) > 0 {
		retry := make([]cleanCandidate, len(again))
		for k, i := range again {
			retry[k] = cands[i]
			retry[k].err = nil
		}
		c.writeBackDurably(retry, inflight, fua)
		for k, i := range again {
			cands[i].err = retry[k].err
		}
	}

	lines := c.mu.lines
	cleaned := 0
	var errs []error
	c.mu.Lock()
	for _, cd := range cands {
		ln := &lines[cd.idx]
		if cd.err == nil {
			c.setMasksLocked(cd.idx, ln.validMask(), ln.dirty.andNot(cd.dirty))
			cd.core.stats.cleanedLines.Add(1)
			if cold && ln.list() == listClean {
				c.mu.lists.remove(lines, cd.idx)
				c.mu.lists.pushBack(lines, listClean, cd.idx)
			}
			cleaned++
		} else if !slices.Contains(errs, cd.err) {
			// Errors come from fmt.Errorf (pointers): == is identity.
			errs = append(errs, cd.err)
		}
	}
	c.mu.Unlock()
	if len(errs) > 0 {
		return cleaned, errors.Join(errs...)
	}
	// Until their clean entries are durable the lines are not reused
	// (line.durableDirty); the callers write the metadata once they are done.
	return cleaned, nil
}

// writeBackDurably writes cands back (writeBackAll) and flushes each core
// written to, unless fua; a failed flush fails all the core's lines. The
// flush also fails if the core lost writes it had acknowledged since the
// writes began (bdev.LossReporter), even if another flush already
// reported that loss: those writes may be these.
func (c *Cache) writeBackDurably(cands []cleanCandidate, inflight int, fua bool) {
	for i := range cands {
		cands[i].mark = bdev.WriteBackMark(cands[i].dev)
	}
	c.writeBackAll(cands, inflight, fua)
	var flushed []*Core
	for i := range cands {
		cd := &cands[i]
		if fua || cd.err != nil || slices.Contains(flushed, cd.core) {
			continue
		}
		flushed = append(flushed, cd.core)
		if err := bdev.FlushSince(cd.dev, cd.mark); err != nil {
			cd.core.stats.coreWrErrors.Add(1)
			// One error shared by the core's lines: cleanBatch reports it once.
			err = onDevice("clean: flush core", cd.dev, err)
			for j := range cands {
				if cands[j].core == cd.core && cands[j].err == nil {
					cands[j].err = err
				}
			}
		}
	}
}

// writeBackAll runs writeBackLine on every candidate, on up to inflight
// goroutines at once (the caller's among them), and records each error in
// its candidate.
func (c *Cache) writeBackAll(cands []cleanCandidate, inflight int, fua bool) {
	work := func(next func() int) {
		bufp := c.bufPool.Get().(*[]byte)
		defer c.bufPool.Put(bufp)
		for i := next(); i < len(cands); i = next() {
			cands[i].err = c.writeBackLine(&cands[i], *bufp, fua)
		}
	}
	var taken atomic.Int64
	next := func() int { return int(taken.Add(1) - 1) }
	var wg sync.WaitGroup
	for range min(inflight, len(cands)) - 1 {
		wg.Go(func() { work(next) })
	}
	work(next)
	wg.Wait()
}

// writeBackLine copies the dirty sectors of one locked line from the cache
// device to its core, run by run, through buf; with fua each core write is
// durable when it returns.
func (c *Cache) writeBackLine(cd *cleanCandidate, buf []byte, fua bool) error {
	co := cd.core
	lineStart := int64(cd.coreLine) * c.layout.lineSize
	for s := 0; ; {
		s0, s1 := cd.dirty.nextRun(s, c.sectorsPerLine)
		if s0 < 0 {
			return nil
		}
		s = s1
		b := buf[s0*sectorSize : s1*sectorSize]
		co.stats.cacheRdBytes.Add(uint64(len(b)))
		if err := c.dev.ReadAt(b, c.layout.lineOffset(cd.idx, s0)); err != nil {
			co.cacheError(true)
			return fmt.Errorf("clean line %d of core %q: %w: %w", cd.coreLine, cd.dev.Info().Name, ErrDirtyUnreadable, err)
		}
		co.stats.coreWrBytes.Add(uint64(len(b)))
		if err := cd.dev.WriteAt(b, lineStart+int64(s0)*sectorSize, fua); err != nil {
			co.stats.coreWrErrors.Add(1)
			return fmt.Errorf("clean line %d: core device: %w", cd.coreLine, err)
		}
		co.stats.cleanedBytes.Add(uint64(len(b)))
	}
}
