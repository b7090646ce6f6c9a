package ocf

// request is the engine's view of one volume IO: the core lines it touches,
// the cache lines they map to (pinned while the request runs) and snapshots
// of their masks taken under Cache.mu. Requests are pooled, so a cache hit
// allocates nothing.
type request struct {
	c   *Cache
	co  *Core
	buf []byte // the caller's buffer; nil for discards
	off int64  // byte offset on the volume
	len int64

	first uint64 // first core line touched
	n     uint64 // number of core lines touched

	lines []lineIdx    // per core line: its pinned cache line, or noLine
	valid []sectorMask // per core line: valid mask at lookup
	dirty []sectorMask // per core line: dirty mask at lookup

	hits      int  // lines in which every touched sector is valid
	dirtyAny  bool // some touched sector is dirty
	dirtyAll  bool // every touched sector is dirty
	occPct    int  // cache occupancy at lookup, percent
	cacheFull bool // engine.md's "full" for sequential cutoff
}

func (c *Cache) getRequest(co *Core, buf []byte, off, length int64) *request {
	r := c.reqPool.Get().(*request)
	ls := c.layout.lineSize
	first := uint64(off / ls)
	n := uint64((off+length+ls-1)/ls) - first
	r.c, r.co, r.buf, r.off, r.len, r.first, r.n = c, co, buf, off, length, first, n
	if uint64(cap(r.lines)) < n {
		r.lines = make([]lineIdx, n)
		r.valid = make([]sectorMask, n)
		r.dirty = make([]sectorMask, n)
	}
	r.lines, r.valid, r.dirty = r.lines[:n], r.valid[:n], r.dirty[:n]
	for k := range r.lines {
		r.lines[k] = noLine
	}
	return r
}

func (c *Cache) putRequest(r *request) {
	r.c, r.co, r.buf = nil, nil, nil
	c.reqPool.Put(r)
}

// touched returns the sectors [s0, s1) of core line first+k that r covers,
// and their mask.
func (r *request) touched(k int) (m sectorMask, s0, s1 int) {
	ls := r.c.layout.lineSize
	lineStart := int64(r.first+uint64(k)) * ls
	start := max(r.off, lineStart)
	end := min(r.off+r.len, lineStart+ls)
	s0, s1 = int((start-lineStart)/sectorSize), int((end-lineStart)/sectorSize)
	return rangeMask(s0, s1), s0, s1
}

// lookupLocked maps r's core lines, pins the mapped cache lines, touches
// them in the LRU and snapshots their masks.
func (r *request) lookupLocked() {
	c := r.c
	lines := c.mu.lines
	r.hits, r.dirtyAny, r.dirtyAll = 0, false, true
	for k := range r.lines {
		t, _, _ := r.touched(k)
		i := c.mu.mapping.lookup(lines, r.co.id, uint32(r.first+uint64(k)))
		r.lines[k] = i
		if i == noLine {
			r.valid[k], r.dirty[k] = sectorMask{}, sectorMask{}
			r.dirtyAll = false
			continue
		}
		ln := &lines[i]
		ln.pins++
		c.mu.lists.moveToFront(lines, ln.list, i)
		r.valid[k], r.dirty[k] = ln.valid, ln.dirty
		if ln.valid.contains(t) {
			r.hits++
		}
		if !ln.dirty.and(t).empty() {
			r.dirtyAny = true
		}
		if !ln.dirty.contains(t) {
			r.dirtyAll = false
		}
	}
	free := c.mu.lists[listFree].n
	r.occPct = c.occupancyPctLocked()
	r.cacheFull = uint64(free) < 512+r.n
}

// allocLocked maps a cache line for every unmapped core line of r. It
// reports false if the cache had no line to give; lines taken so far stay
// pinned in r and are freed by release.
func (r *request) allocLocked() bool {
	c := r.c
	for k, i := range r.lines {
		if i != noLine {
			continue
		}
		coreLine := uint32(r.first + uint64(k))
		// A concurrent reader of the same line may have mapped it since
		// lookup (readers share the stripe lock).
		if i = c.mu.mapping.lookup(c.mu.lines, r.co.id, coreLine); i != noLine {
			ln := &c.mu.lines[i]
			ln.pins++
			r.valid[k], r.dirty[k] = ln.valid, ln.dirty
		} else if i = c.allocLocked(r.co, coreLine); i == noLine {
			return false
		}
		r.lines[k] = i
	}
	return true
}

// release unpins r's lines.
func (r *request) release() {
	c := r.c
	c.mu.Lock()
	for k, i := range r.lines {
		if i != noLine {
			c.unpinLocked(i)
			r.lines[k] = noLine
		}
	}
	c.mu.Unlock()
}

// promote asks the promotion policy about every unmapped line of r; all must
// be admitted for the request to insert.
func (r *request) promote() bool {
	ok := true
	for k, i := range r.lines {
		if i == noLine && !r.c.promotion.Promote(r.co.id, r.first+uint64(k), r.occPct) {
			ok = false // keep asking: policies count accesses
		}
	}
	return ok
}

// selector picks, for each line of a request, the sectors an IO moves.
type selector uint8

const (
	selTouched selector = iota // every sector the request covers
	selDirty                   // covered sectors dirty at lookup
	selMissing                 // covered sectors not valid at lookup
)

func (r *request) selected(k int, sel selector) sectorMask {
	t, _, _ := r.touched(k)
	switch sel {
	case selDirty:
		return t.and(r.dirty[k])
	case selMissing:
		return t.andNot(r.valid[k])
	}
	return t
}

// cacheIO moves the selected sectors of r's mapped lines between the
// caller's buffer and the cache device, merging runs that are contiguous on
// both sides into one device IO.
func (r *request) cacheIO(sel selector, write, fua bool) error {
	c := r.c
	ls := c.layout.lineSize
	var pendDev, pendBuf, pendLen int64
	issue := func() error {
		if pendLen == 0 {
			return nil
		}
		b := r.buf[pendBuf : pendBuf+pendLen]
		var err error
		if write {
			err = c.dev.WriteAt(b, pendDev, fua)
			r.co.stats.cacheWrBytes.Add(uint64(pendLen))
		} else {
			err = c.dev.ReadAt(b, pendDev)
			r.co.stats.cacheRdBytes.Add(uint64(pendLen))
		}
		pendLen = 0
		return err
	}
	for k, i := range r.lines {
		if i == noLine {
			continue
		}
		m := r.selected(k, sel)
		lineStart := int64(r.first+uint64(k)) * ls
		for s := 0; ; {
			s0, s1 := m.nextRun(s, c.sectorsPerLine)
			if s0 < 0 {
				break
			}
			s = s1
			dev := c.layout.lineOffset(i, s0)
			bufOff := lineStart + int64(s0)*sectorSize - r.off
			n := int64(s1-s0) * sectorSize
			if pendLen > 0 && dev == pendDev+pendLen && bufOff == pendBuf+pendLen {
				pendLen += n
				continue
			}
			if err := issue(); err != nil {
				return err
			}
			pendDev, pendBuf, pendLen = dev, bufOff, n
		}
	}
	return issue()
}

// invalidate drops the covered sectors of r's mapped lines from the cache;
// with keepDirty, dirty sectors stay (used when the core write failed and the
// core's copy may be torn).
func (r *request) invalidate(keepDirty bool) {
	c := r.c
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, i := range r.lines {
		if i == noLine {
			continue
		}
		t, _, _ := r.touched(k)
		ln := &c.mu.lines[i]
		if keepDirty {
			t = t.andNot(ln.dirty)
		}
		c.setMasksLocked(i, ln.valid.andNot(t), ln.dirty.andNot(t))
	}
}

// markWritten records that the covered sectors of every mapped line now hold
// the request's data: valid, and dirty or clean as given.
func (r *request) markWritten(dirty bool) {
	c := r.c
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, i := range r.lines {
		if i == noLine {
			continue
		}
		t, _, _ := r.touched(k)
		ln := &c.mu.lines[i]
		d := ln.dirty.andNot(t)
		if dirty {
			d = ln.dirty.or(t)
		}
		c.setMasksLocked(i, ln.valid.or(t), d)
	}
}

// markFilled records that a read miss inserted the covered sectors: they are
// valid; dirtiness is unchanged (dirty sectors were not overwritten).
func (r *request) markFilled() {
	c := r.c
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, i := range r.lines {
		if i == noLine {
			continue
		}
		t, _, _ := r.touched(k)
		ln := &c.mu.lines[i]
		c.setMasksLocked(i, ln.valid.or(t), ln.dirty)
	}
}
