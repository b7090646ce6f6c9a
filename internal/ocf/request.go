package ocf

import (
	"fmt"
	"slices"

	"blockcache/internal/invariants"
)

// request is the engine's view of one volume IO: the core lines it touches,
// the cache lines they map to and snapshots of their masks taken under
// Cache.mu. It lives on the caller's stack; requests of up to inlineLines
// lines keep their per-line state inline, so a cache hit allocates nothing.
// Larger requests borrow it from Cache.scratch.
type request struct {
	c   *Cache
	co  *Core
	buf []byte // the caller's buffer; nil for discards
	off int64  // byte offset on the volume
	len int64

	first uint64 // first core line touched
	n     uint64 // number of core lines touched

	hits      int  // lines in which every touched sector is valid
	dirtyAny  bool // some touched sector is dirty
	occPct    int  // cache occupancy at lookup, percent (lookupLocked)
	cacheFull bool // engine.md's "full" for sequential cutoff (free lines ≤ 512 + n), once fullKnown
	fullKnown bool // occPct and cacheFull are set (see full)
	// allocated is set once allocLocked ran: lines left empty by a failure
	// must then be tidied (see tidy).
	allocated bool
	// commitSeq is the number of the newest urgent change once r made one
	// (noteUrgentLocked), else 0: the change commitWrite waits for.
	commitSeq uint64

	class reqClass // how the request was counted (countRead, countWrite)
	// counted says whether class is set: a request may fail before it is
	// counted.
	counted bool
	ptWhy   PTReason // why it went pass-through, when class is classPT

	scratch *requestScratch // borrowed for large requests, else nil
	inline  struct {
		lines               [inlineLines]lineIdx
		valid, dirty, touch [inlineLines]sectorMask
	}
}

// inlineLines is how many lines a request holds without borrowing scratch:
// enough for a 4 KiB IO at any alignment and line size.
const inlineLines = 2

// requestScratch is per-line state for requests of many lines.
type requestScratch struct {
	lines               []lineIdx
	valid, dirty, touch []sectorMask
}

// init prepares r for an IO of length bytes at off on co.
func (r *request) init(c *Cache, co *Core, buf []byte, off, length int64) {
	shift := c.layout.lineShift
	first := uint64(off) >> shift
	n := (uint64(off+length)+uint64(c.layout.lineSize)-1)>>shift - first
	*r = request{c: c, co: co, buf: buf, off: off, len: length, first: first, n: n, ptWhy: ptUnset}
	if n > inlineLines {
		sc := c.scratch.Get().(*requestScratch)
		if uint64(cap(sc.lines)) < n {
			sc.lines = make([]lineIdx, n)
			sc.valid, sc.dirty, sc.touch = make([]sectorMask, n), make([]sectorMask, n), make([]sectorMask, n)
		}
		r.scratch = sc
	}
	lines, touch := r.lines(), r.touch()
	for k := range lines {
		lines[k] = noLine
	}
	// Only the first and the last line can be partly covered.
	touch[0], _, _ = r.span(0)
	if n > 1 {
		full := rangeMask(0, c.sectorsPerLine)
		for k := 1; k < int(n)-1; k++ {
			touch[k] = full
		}
		touch[n-1], _, _ = r.span(int(n - 1))
	}
}

// touch returns, per core line of r, the sectors r covers in it.
func (r *request) touch() []sectorMask {
	if r.scratch != nil {
		return r.scratch.touch[:r.n]
	}
	return r.inline.touch[:r.n]
}

// lines returns, per core line of r, its cache line or noLine. (The
// per-line slices are computed, not stored, so that r does not point into
// itself, which would move it to the heap.)
func (r *request) lines() []lineIdx {
	if r.scratch != nil {
		return r.scratch.lines[:r.n]
	}
	return r.inline.lines[:r.n]
}

// valid returns, per core line of r, its valid mask at lookup.
func (r *request) valid() []sectorMask {
	if r.scratch != nil {
		return r.scratch.valid[:r.n]
	}
	return r.inline.valid[:r.n]
}

// dirty returns, per core line of r, its dirty mask at lookup.
func (r *request) dirty() []sectorMask {
	if r.scratch != nil {
		return r.scratch.dirty[:r.n]
	}
	return r.inline.dirty[:r.n]
}

// done returns borrowed scratch.
func (r *request) done() {
	if r.scratch != nil {
		r.c.scratch.Put(r.scratch)
		r.scratch = nil
	}
}

// touched returns the mask of the sectors of core line first+k that r
// covers.
func (r *request) touched(k int) sectorMask { return r.touch()[k] }

// span returns the sectors [s0, s1) of core line first+k that r covers,
// and their mask.
func (r *request) span(k int) (m sectorMask, s0, s1 int) {
	ls := r.c.layout.lineSize
	lineStart := int64(r.first+uint64(k)) << r.c.layout.lineShift
	start := max(r.off, lineStart)
	end := min(r.off+r.len, lineStart+ls)
	s0, s1 = int(uint64(start-lineStart)>>9), int(uint64(end-lineStart)>>9)
	return rangeMask(s0, s1), s0, s1
}

// lookupLocked maps r's core lines, touches the mapped cache lines in the
// LRU and snapshots their masks. The caller holds r's stripes, which keeps
// the lines from being evicted until it lets go.
func (r *request) lookupLocked() {
	c := r.c
	lines := c.mu.lines
	r.hits, r.dirtyAny = 0, false
	for k := range r.lines() {
		i := c.mu.mapping.lookup(lines, r.co.id, uint32(r.first+uint64(k)))
		r.lines()[k] = i
		if i == noLine {
			r.valid()[k], r.dirty()[k] = sectorMask{}, sectorMask{}
			continue
		}
		c.mu.lists.moveToFront(lines, lines[i].list(), i) // LRU touch
		r.record(k, i)
	}
	r.occupancyLocked()
}

// record snapshots the masks of line i, mapped for r's k-th core line, and
// counts it in hits and dirtyAny. The caller holds the line's stripe.
func (r *request) record(k int, i lineIdx) {
	ln := &r.c.mu.lines[i]
	t := r.touched(k)
	v, d := ln.validMask(), ln.dirty
	if r.scratch != nil {
		r.scratch.valid[k], r.scratch.dirty[k] = v, d
	} else {
		r.inline.valid[k], r.inline.dirty[k] = v, d
	}
	if v.contains(t) {
		r.hits++
	}
	if !d.and(t).empty() {
		r.dirtyAny = true
	}
}

// occupancyLocked sets occPct and cacheFull from the cache's occupancy now.
func (r *request) occupancyLocked() {
	c := r.c
	free := c.layout.numLines - c.occupiedLocked()
	r.occPct = c.occupancyPctLocked()
	r.cacheFull = uint64(free) <= 512+r.n // OCF's ocf_seq_cutoff_is_on
	r.fullKnown = true
}

// full reports engine.md's "full cache" for sequential cutoff: as lookup
// saw it, or, after lookupFast, as it is now.
func (r *request) full() bool {
	if !r.fullKnown {
		r.c.mu.Lock()
		r.occupancyLocked()
		r.c.mu.Unlock()
	}
	return r.cacheFull
}

// lookupFast is lookupLocked without Cache.mu for a request whose lines
// are all mapped; it reports false otherwise, leaving r for lookupLocked,
// which redoes every line. The caller holds r's stripes exclusively, so no
// one can map, unmap or change the lines under it, and the masks it reads
// are the lines'. The lines are marked referenced rather than moved in the
// LRU list (lazy promotion, as a read hit does), and the occupancy is left
// for full to find if the sequential cutoff needs it. A write of many lines
// over mapped ones (a 128 KiB write-through of 32 lines) so takes Cache.mu
// not at all, where lookupLocked would hold it for 32 lookups and list
// moves that every other request waits behind.
func (r *request) lookupFast() bool {
	c := r.c
	lines := r.lines()
	for k := range lines {
		i := c.probe(r.co.id, uint32(r.first+uint64(k)))
		if i == noLine {
			return false // a miss, or a lock-free walk that lost a race
		}
		lines[k] = i
	}
	r.hits, r.dirtyAny = 0, false
	for k, i := range lines {
		r.record(k, i)
		c.mu.lines[i].reference()
	}
	return true
}

// refresh brings r's view of its lines up to date when r takes its
// stripes' RW locks back after a core write (writeCore). While r held only
// the order locks, readers may have mapped lines for core lines r found
// unmapped and added valid bits to any line, but nothing else: everyone
// else who changes a line needs the order lock. So refresh looks up, under
// Cache.mu, only the core lines r has no line for, and re-reads the masks
// of the lines it has, which stay mapped as they were. r.hits and
// r.dirtyAny keep what lookup counted.
func (r *request) refresh() {
	c := r.c
	lines := r.lines()
	if invariants.Enabled {
		for k, i := range lines {
			if i != noLine {
				r.checkKept(k, i)
			}
		}
	}
	if slices.Contains(lines, noLine) {
		c.mu.Lock()
		for k, i := range lines {
			if i == noLine {
				lines[k] = c.mu.mapping.lookup(c.mu.lines, r.co.id, uint32(r.first+uint64(k)))
			}
		}
		c.mu.Unlock()
	}
	valid, dirty := r.valid(), r.dirty()
	for k, i := range lines {
		if i != noLine {
			ln := &c.mu.lines[i]
			valid[k], dirty[k] = ln.validMask(), ln.dirty
		}
	}
}

// checkKept panics unless line i, which r held for its k-th core line
// before it yielded, is still mapped to that core line with the dirty
// mask and at least the valid sectors r saw: what refresh relies on.
func (r *request) checkKept(k int, i lineIdx) {
	ln := &r.c.mu.lines[i]
	switch {
	case !ln.mapped() || ln.core() != r.co.id || uint64(ln.coreLine()) != r.first+uint64(k):
		panic(fmt.Sprintf("ocf: line %d of core %d line %d was remapped during a core write", i, r.co.id, r.first+uint64(k)))
	case ln.dirty != r.dirty()[k] || !ln.validMask().contains(r.valid()[k]):
		panic(fmt.Sprintf("ocf: line %d of core %d line %d lost valid or changed dirty sectors during a core write", i, r.co.id, r.first+uint64(k)))
	}
}

// allocLocked maps a cache line for every unmapped core line of r. It
// reports false if the cache had no line to give; lines taken so far stay
// in r (empty) for tidy.
func (r *request) allocLocked() bool {
	c := r.c
	r.allocated = true
	for k, i := range r.lines() {
		if i != noLine {
			continue
		}
		coreLine := uint32(r.first + uint64(k))
		// A concurrent reader of the same line may have mapped it since
		// lookup (readers share the stripe lock).
		if i = c.mu.mapping.lookup(c.mu.lines, r.co.id, coreLine); i != noLine {
			ln := &c.mu.lines[i]
			r.valid()[k], r.dirty()[k] = ln.validMask(), ln.dirty
		} else if i = c.allocLocked(r.co, coreLine); i == noLine {
			return false
		}
		r.lines()[k] = i
	}
	return true
}

// tidy unmaps the lines r allocated but left empty (a failed fill, a
// request that fell back to pass-through). It runs after r let go of its
// stripes: a line whose stripe it cannot lock is in use by another request
// (a reader filling the same line), which then tidies it, or by an
// unrelated one, and then stays mapped, empty, until evicted.
func (r *request) tidy() {
	if !r.allocated || !r.anyEmpty() {
		return
	}
	c := r.c
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, i := range r.lines() {
		if i == noLine || !c.mu.lines[i].validMask().empty() || !c.mu.lines[i].mapped() {
			continue
		}
		ln := &c.mu.lines[i]
		if ln.core() != r.co.id || uint64(ln.coreLine()) < r.first || uint64(ln.coreLine()) >= r.first+r.n {
			continue // reused since
		}
		s := c.stripes.index(ln.core(), uint64(ln.coreLine()))
		if c.stripes.locks[s].TryLock() {
			c.unmapLocked(i)
			c.stripes.locks[s].Unlock()
		}
	}
}

// anyEmpty reports whether some mapped line of r held no valid sector at
// lookup (or was mapped by r, empty), which spares tidy Cache.mu in the
// common case. A line that held data then is not tidy's to unmap even if it
// was emptied since: whoever emptied it held its stripe exclusively and
// dropped it then. It reads only r's own copy of the masks, not the lines,
// whose CPU cache lines other CPUs write.
func (r *request) anyEmpty() bool {
	for k, i := range r.lines() {
		if i != noLine && r.valid()[k].empty() {
			return true
		}
	}
	return false
}

// promote asks the promotion policy about every unmapped line of r; all must
// be admitted for the request to insert.
func (r *request) promote() bool {
	ok := true
	pol := r.c.prom.get()
	for k, i := range r.lines() {
		if i == noLine && !pol.Promote(r.co.id, r.first+uint64(k), r.occPct) {
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
	t := r.touched(k)
	switch sel {
	case selDirty:
		return t.and(r.dirty()[k])
	case selMissing:
		return t.andNot(r.valid()[k])
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
	full := rangeMask(0, c.sectorsPerLine)
	for k, i := range r.lines() {
		if i == noLine {
			continue
		}
		m := r.selected(k, sel)
		lineStart := int64(r.first+uint64(k)) * ls
		for s := 0; ; {
			var s0, s1 int
			if m == full {
				// The whole line, as every inner line of a large
				// request: no need to look for runs.
				s0, s1, m = 0, c.sectorsPerLine, sectorMask{}
			} else if s0, s1 = m.nextRun(s, c.sectorsPerLine); s0 < 0 {
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

// invalidate drops the covered sectors of r's mapped lines from the cache,
// and lines left empty; with keepDirty, dirty sectors stay (used when the
// core write failed and the core's copy may be torn). The caller holds r's
// stripes exclusively.
func (r *request) invalidate(keepDirty bool) {
	c := r.c
	c.mu.Lock()
	defer c.mu.Unlock()
	defer r.noteUrgentLocked(c.meta.urgentSeq.Load())
	for k, i := range r.lines() {
		if i == noLine {
			continue
		}
		t := r.touched(k)
		ln := &c.mu.lines[i]
		if keepDirty {
			t = t.andNot(ln.dirty)
		}
		c.setMasksLocked(i, ln.validMask().andNot(t), ln.dirty.andNot(t))
		c.dropEmptyLocked(i)
		r.lines()[k] = noLine
	}
}

// markWritten records that the covered sectors of every mapped line now hold
// the request's data: valid, and dirty or clean as given.
//
// Lines whose masks it would not change (a write-through over clean valid
// sectors, a write-back over dirty ones) are left alone: their entries and
// list places stay as lookup left them, so such a write takes Cache.mu only
// for its lookup. The masks lookup saw are still the line's: the caller
// holds the stripes exclusively.
func (r *request) markWritten(dirty bool) {
	c := r.c
	locked, before := false, uint64(0)
	valids, dirties, touch := r.valid(), r.dirty(), r.touch()
	for k, i := range r.lines() {
		if i == noLine {
			continue
		}
		t, v0, d0 := touch[k], valids[k], dirties[k]
		v, d := v0.or(t), d0.andNot(t)
		if dirty {
			d = d0.or(t)
		}
		if v == v0 && d == d0 {
			continue
		}
		if !locked {
			c.mu.Lock()
			before, locked = c.meta.urgentSeq.Load(), true
		}
		c.setMasksLocked(i, v, d)
	}
	if locked {
		// Not deferred: a defer taken inside the loop would move r to
		// the heap, and every write would allocate.
		r.noteUrgentLocked(before)
		c.mu.Unlock()
	}
}

// noteUrgentLocked records in commitSeq the newest urgent change if r made
// one since the count was before. The caller has held Cache.mu since it
// read before, so every change counted since is r's.
func (r *request) noteUrgentLocked(before uint64) {
	if now := r.c.meta.urgentSeq.Load(); now != before {
		r.commitSeq = now
	}
}

// markFilled records that a read miss inserted the covered sectors: they are
// valid; dirtiness is unchanged (dirty sectors were not overwritten).
func (r *request) markFilled() {
	c := r.c
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, i := range r.lines() {
		if i == noLine {
			continue
		}
		t := r.touched(k)
		ln := &c.mu.lines[i]
		c.setMasksLocked(i, ln.validMask().or(t), ln.dirty)
	}
}
