package ocf

import (
	"fmt"
	"slices"

	"blockcache/internal/bdev"
	"blockcache/internal/latency"
)

// The data path. Each operation locks the stripes of its core lines (shared
// for reads, exclusive otherwise), looks its lines up, acts by mode as in
// engine.md's table, and updates the masks once its device IO succeeded.
// A write lets go of its stripes' RW locks, keeping their order locks,
// across its core write (writeCore), so that reads of those stripes do not
// wait for the core.
//
// When a request needs lines and the cache has none to give because every
// line is dirty or pinned, it drops its locks, writes back some dirty lines
// (cleanForRoom) and tries once more; after that it falls back to
// pass-through (reads) or write-invalidate (writes), counted as rd_pt/wr_pt.

func (c *Cache) read(co *Core, p []byte, off int64) error {
	start := latency.Now()
	if served, err := c.readHit(co, p, off, true); served {
		co.lat.readHit.Since(uint64(off)>>c.layout.lineShift, start)
		return err
	}
	co.stats.volumeRdBytes.Add(uint64(len(p)))
	var r request
	r.init(c, co, p, off, int64(len(p)))
	for attempt := 0; ; attempt++ {
		retry, err := c.readOnce(&r, attempt > 0)
		if !retry {
			r.done()
			co.lat.readDone(r.class, r.first, start)
			return err
		}
		c.cleanForRoom(&r)
	}
}

func (c *Cache) readOnce(r *request, lastTry bool) (retry bool, err error) {
	co := r.co
	c.stripes.lockRange(co.id, r.first, r.n, false)
	if err = co.admit("read"); err == nil {
		retry, err = c.readLocked(r, lastTry)
	}
	c.stripes.unlockRange(co.id, r.first, r.n, false)
	r.tidy()
	return retry, err
}

// readLocked is readOnce with r's stripes held shared.
func (c *Cache) readLocked(r *request, lastTry bool) (retry bool, err error) {
	co := r.co
	mode := c.effectiveMode()
	c.mu.Lock()
	r.lookupLocked()
	c.mu.Unlock()

	switch {
	case mode == ModePT:
		r.ptWhy = c.modePTReason()
		r.countRead(classPT)
		return false, c.readAround(r)
	case r.hits == int(r.n):
		r.countRead(classHit)
		if err := r.cacheIO(selTouched, false, false); err == nil {
			return false, nil
		}
		// Serve from the core where it holds the data; dirty sectors must
		// still come from the cache or the request fails.
		co.cacheError(true)
		return false, c.readAround(r)
	}

	class := r.missClass()
	if mode == ModeWO {
		// A write-only read that misses anywhere reads the core with the
		// dirty sectors laid over, after the sequential cutoff check, and
		// never inserts.
		if co.bypass(r, false) {
			class, r.ptWhy = classPT, PTSeqCutoff
		}
		r.countRead(class)
		return false, c.readAround(r)
	}
	insert, retry := c.mapForInsert(r, false, lastTry)
	if retry {
		return true, nil
	}
	if !insert {
		r.countRead(classPT)
		return false, c.readAround(r)
	}
	r.countRead(class)
	if err := c.readAround(r); err != nil {
		return false, err
	}
	if err := r.cacheIO(selMissing, true, false); err != nil {
		// The client has its data; the lines simply stay unfilled.
		co.cacheError(false)
		return false, nil
	}
	r.markFilled()
	return false, nil
}

// mapForInsert decides whether r inserts its missing lines (sequential
// cutoff, then promotion) and maps them. When the cache has no line to give
// but could make room, it asks for a retry (the caller drops its locks and
// cleans first) unless this is the last try; otherwise the request goes
// pass-through, with r.ptWhy saying why.
func (c *Cache) mapForInsert(r *request, write, lastTry bool) (insert, retry bool) {
	if r.co.bypass(r, write) {
		r.ptWhy = PTSeqCutoff
		return false, false
	}
	if !r.promote() {
		r.ptWhy = PTPromotion
		return false, false
	}
	if !slices.Contains(r.lines(), noLine) {
		// Every line is mapped: nothing to allocate. Some may be mapped
		// empty by a reader whose fill failed and whose tidy could not
		// lock the stripe this request holds: this request tidies them.
		r.allocated = true
		return true, false
	}
	c.mu.Lock()
	insert = r.allocLocked()
	c.mu.Unlock()
	r.ptWhy = PTNoSpace
	return insert, !insert && !lastTry && c.canMakeRoom()
}

// missClass classifies r by its hits: hit, partial or full miss.
func (r *request) missClass() reqClass {
	switch {
	case r.hits == 0:
		return classFullMiss
	case r.hits < int(r.n):
		return classPartialMiss
	}
	return classHit
}

// readAround reads r's range from the core and lays the dirty sectors from
// the cache over it.
func (c *Cache) readAround(r *request) error {
	co := r.co
	co.stats.coreRdBytes.Add(uint64(r.len))
	if err := co.dev.ReadAt(r.buf, r.off); err != nil {
		co.stats.coreRdErrors.Add(1)
		return fmt.Errorf("%s read at %d: core device: %w", co.info.Name, r.off, err)
	}
	if !r.dirtyAny {
		return nil
	}
	if err := r.cacheIO(selDirty, false, false); err != nil {
		co.cacheError(true)
		return fmt.Errorf("%s read at %d: %w: %w", co.info.Name, r.off, ErrDirtyUnreadable, err)
	}
	return nil
}

func (c *Cache) write(co *Core, p []byte, off int64, fua bool) error {
	start := latency.Now()
	defer co.lat.write.Since(start)
	co.stats.volumeWrBytes.Add(uint64(len(p)))
	var r request
	r.init(c, co, p, off, int64(len(p)))
	a, fua := c.takeWriteOrder(&r, fua)
	if a.superseded() {
		r.done()
		return a.absorbed(&r)
	}
	err := c.writeOrdered(&r, fua)
	a.finish(err, &r)
	return err
}

// writeOrdered runs write r, whose order locks the caller holds, and lets
// go of them.
func (c *Cache) writeOrdered(r *request, fua bool) error {
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			c.stripes.lockOrderRange(r.co.id, r.first, r.n)
		}
		retry, err := c.writeOnce(r, fua, attempt > 0)
		if !retry {
			r.done()
			if err == nil {
				// The metadata recording the write's change of dirty
				// state (with FUA, every change) is durable before the
				// write returns.
				err = c.commitWrite(r, "write", fua)
			}
			return err
		}
		c.cleanForRoom(r)
	}
}

// writeOnce takes the RW locks of r's stripes, whose order locks the
// caller holds, runs r and lets go of both.
func (c *Cache) writeOnce(r *request, fua, lastTry bool) (retry bool, err error) {
	co := r.co
	c.stripes.resumeRange(co.id, r.first, r.n)
	if err = co.admit("write"); err == nil {
		retry, err = c.writeLocked(r, fua, lastTry)
	}
	c.stripes.unlockRange(co.id, r.first, r.n, true)
	r.tidy()
	return retry, err
}

// writeLocked is writeOnce with r's stripes held exclusively. Its core
// writes yield the stripes' RW locks (writeCore).
func (c *Cache) writeLocked(r *request, fua, lastTry bool) (retry bool, err error) {
	co := r.co
	mode := c.writeMode(co)
	if !r.lookupFast() {
		c.mu.Lock()
		r.lookupLocked()
		c.mu.Unlock()
	}

	switch mode {
	case ModeWI, ModePT:
		r.ptWhy = c.modePTReason()
		r.countWrite(classPT)
		return false, c.writeInvalidate(r, fua, true)
	case ModeWA:
		// A write that hits in every line keeps the cache coherent by
		// updating it, as write-through; anything else goes around it.
		if r.hits == int(r.n) {
			r.countWrite(classHit)
			return false, c.writeThrough(r, fua)
		}
		r.ptWhy = PTMode
		r.countWrite(classPT)
		return false, c.writeInvalidate(r, fua, true)
	}

	// wt, wb, wo: every line of the request is mapped.
	class := r.missClass()
	insert, retry := c.mapForInsert(r, true, lastTry)
	if retry {
		return true, nil
	}
	if !insert {
		r.countWrite(classPT)
		return false, c.writeInvalidate(r, fua, true)
	}
	r.countWrite(class)
	if mode == ModeWT {
		return false, c.writeThrough(r, fua)
	}
	return false, c.writeBack(r, fua)
}

// writeCore writes r's buffer to the core. On failure the core's copy of the
// range is unknown, so clean cached copies are dropped (reads then come from
// the core consistently) while dirty ones, the newest acknowledged data, stay.
//
// Every caller then clears the dirty bits of the range (the core holds the
// newest data). Once that change reaches the metadata, a crash would read the
// range from the core, so the core's copy must be durable first: when the
// range held dirty data, the write is made durable (FUA) before returning.
//
// With yield, the caller holds r's stripes exclusively (writeOnce), and
// writeCore lets go of their RW locks across the core write, keeping their
// order locks, then takes them back and refreshes r. Meanwhile readers of
// the stripes go on, seeing the cache's data from before the write, and may
// map and fill lines from the core, whose data may be from before the write
// too: refresh finds those lines, so that the caller overwrites or drops
// their covered sectors before the write returns. No one else can take the
// stripes: other writes, discards, cleaning, eviction and drains wait for
// the order locks, so overlapping writes reach the core in order, no line
// of r is unmapped or remapped, and no dirty data is written back over the
// new data. See engine.md, Concurrency.
func (c *Cache) writeCore(r *request, fua, yield bool) error {
	co := r.co
	co.stats.coreWrBytes.Add(uint64(r.len))
	if yield {
		c.stripes.yieldRange(co.id, r.first, r.n)
	}
	err := co.dev.WriteAt(r.buf, r.off, fua || r.dirtyAny)
	if yield {
		c.stripes.resumeRange(co.id, r.first, r.n)
		r.refresh()
	}
	if err != nil {
		co.stats.coreWrErrors.Add(1)
		r.invalidate(true)
		return fmt.Errorf("%s write at %d: core device: %w", co.info.Name, r.off, err)
	}
	return nil
}

// writeInvalidate writes to the core and drops the covered sectors from the
// cache, dirty ones too: the core now holds newer data. yield is as for
// writeCore.
func (c *Cache) writeInvalidate(r *request, fua, yield bool) error {
	if err := c.writeCore(r, fua, yield); err != nil {
		return err
	}
	r.invalidate(false)
	return nil
}

// writeThrough writes to the core, then to every mapped line, which holds
// the covered sectors clean. A failed cache write only invalidates. The
// core write yields the stripes' RW locks (writeCore): the cache copy is
// written after it, under them again.
func (c *Cache) writeThrough(r *request, fua bool) error {
	if err := c.writeCore(r, fua, true); err != nil {
		return err
	}
	if err := r.cacheIO(selTouched, true, false); err != nil {
		r.co.cacheError(false)
		r.invalidate(false)
		return nil
	}
	r.markWritten(false)
	return nil
}

// writeBack writes to the cache only and marks the covered sectors dirty. If
// the cache device fails, the write goes to the core instead, with the
// stripes held throughout: the failed write left the cache's copy of the
// range unknown, and no reader may see it.
func (c *Cache) writeBack(r *request, fua bool) error {
	if err := r.cacheIO(selTouched, true, fua); err != nil {
		r.co.cacheError(false)
		return c.writeInvalidate(r, fua, false)
	}
	r.markWritten(true)
	return nil
}

func (c *Cache) discard(co *Core, off, length int64) error {
	var r request
	r.init(c, co, nil, off, length)
	defer r.done()
	c.stripes.lockRange(co.id, r.first, r.n, true)
	defer c.stripes.unlockRange(co.id, r.first, r.n, true)
	if err := co.admit("discard"); err != nil {
		return err
	}
	if !co.info.Abilities.Discard {
		return fmt.Errorf("%s discard: core %s: %w", co.info.Name, co.dev.Info().Name, bdev.ErrNotSupported)
	}
	c.mu.Lock()
	r.lookupLocked()
	c.mu.Unlock()
	co.stats.coreWrBytes.Add(uint64(length))
	if err := bdev.Discard(co.dev, off, length); err != nil {
		co.stats.coreWrErrors.Add(1)
		return fmt.Errorf("%s discard at %d: core device: %w", co.info.Name, off, err)
	}
	if r.dirtyAny {
		// As in writeCore: the core's new contents must be durable before
		// the metadata can say the dirty sectors are gone.
		if err := co.dev.Flush(); err != nil {
			co.stats.coreWrErrors.Add(1)
			return fmt.Errorf("%s discard at %d: flush core device: %w", co.info.Name, off, err)
		}
	}
	r.invalidate(false)
	return c.commitWrite(&r, "discard", false)
}
