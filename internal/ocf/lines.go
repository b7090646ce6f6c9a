package ocf

// Line state changes. All run under Cache.mu, and each marks the line's
// entry sector for the next metadata write (see persist.go).

// occupiedLocked is the number of mapped lines.
func (c *Cache) occupiedLocked() int {
	return c.mu.lists[listClean].n + c.mu.lists[listDirty].n
}

// occupancyPctLocked is the share of lines in use, 0..100.
func (c *Cache) occupancyPctLocked() int {
	return 100 * c.occupiedLocked() / c.layout.numLines
}

// allocLocked maps a line for (core, coreLine), taking a free line or
// evicting the least recently used clean line that no request is using (its
// stripe can be locked) and whose durable entry claims no dirty data. The
// new line is empty and at the head of the clean list. It returns noLine when
// no line can be given.
//
// Hits served without Cache.mu (hit.go) cannot move their line in the LRU;
// they mark it referenced instead, and eviction gives a referenced line a
// second chance: it clears the mark and moves the line to the head, as the
// hit would have. Each line is passed over at most once per scan, since
// the lines it moves come back with the mark cleared.
func (c *Cache) allocLocked(co *Core, coreLine uint32) lineIdx {
	lines := c.mu.lines
	i := c.mu.lists[listFree].head
	if i == noLine {
		for j := c.mu.lists[listClean].tail; j != noLine; {
			prev := lines[j].prev
			switch {
			case lines[j].takeReferenced():
				c.mu.lists.moveToFront(lines, listClean, j)
				if prev == noLine {
					continue // j was and is the head: it is next in order
				}
			case lines[j].durableDirty():
			default:
				s := c.stripes.index(lines[j].core(), uint64(lines[j].coreLine()))
				if c.stripes.locks[s].TryLock() {
					c.unmapLocked(j)
					c.stripes.locks[s].Unlock()
					i = j
				}
			}
			if i != noLine {
				break
			}
			j = prev
		}
		if i == noLine {
			return noLine
		}
	}
	c.mu.lists.remove(lines, i)
	ln := &lines[i]
	ln.setID(co.id, coreLine)
	ln.setValid(sectorMask{})
	ln.dirty = sectorMask{}
	c.mu.mapping.insert(lines, i)
	c.mu.lists.pushFront(lines, listClean, i)
	co.occupied++
	c.markSectorLocked(i, false)
	return i
}

// unmapLocked drops line i's mapping. The line goes to the free list, or to
// limbo while its durable entry still claims dirty data. The caller holds
// the stripe of the line's core line exclusively, or knows no one else can
// use it (eviction's TryLock, a lock on every stripe).
func (c *Cache) unmapLocked(i lineIdx) {
	ln := &c.mu.lines[i]
	co := c.mu.cores[ln.core()]
	co.occupied--
	if ln.list() == listDirty {
		co.dirtyLines--
		c.chunkDirtyLocked(ln, -1)
	}
	urgent := ln.durableDirty() || !ln.dirty.empty()
	c.mu.mapping.remove(c.mu.lines, i)
	c.mu.lists.remove(c.mu.lines, i)
	ln.setValid(sectorMask{})
	ln.dirty = sectorMask{}
	if ln.durableDirty() {
		c.mu.lists.pushFront(c.mu.lines, listLimbo, i)
	} else {
		c.mu.lists.pushFront(c.mu.lines, listFree, i)
	}
	c.markSectorLocked(i, urgent)
}

// setMasksLocked updates line i's masks, moving it between the clean and
// dirty lists as needed and to the head of its list. The caller holds the
// line's stripe exclusively, or only adds valid bits. A change of the dirty
// mask is urgent for the metadata: a flush or FUA must persist it.
func (c *Cache) setMasksLocked(i lineIdx, valid, dirty sectorMask) {
	ln := &c.mu.lines[i]
	co := c.mu.cores[ln.core()]
	urgent := ln.dirty != dirty
	ln.setValid(valid)
	ln.dirty = dirty
	want := listClean
	if !dirty.empty() {
		want = listDirty
	}
	switch {
	case ln.list() == want:
		c.mu.lists.moveToFront(c.mu.lines, want, i)
	case want == listDirty:
		co.dirtyLines++
		c.chunkDirtyLocked(ln, 1)
		ln.setDirtySince(c.secondsLocked())
		c.mu.lists.moveToFront(c.mu.lines, want, i)
	case ln.list() == listDirty:
		co.dirtyLines--
		c.chunkDirtyLocked(ln, -1)
		c.mu.lists.moveToFront(c.mu.lines, want, i)
	default:
		c.mu.lists.moveToFront(c.mu.lines, want, i)
	}
	c.markSectorLocked(i, urgent)
}

// dropEmptyLocked unmaps line i if it holds nothing. The caller holds its
// stripe exclusively.
func (c *Cache) dropEmptyLocked(i lineIdx) {
	if c.mu.lines[i].validMask().empty() {
		c.unmapLocked(i)
	}
}
