package ocf

// The hit path: a read that lies within one cache line whose sectors are all
// valid is served without Cache.mu and, most of the time, without its
// stripe lock. It looks the line up lock-free, reads the cache device and
// counts a hit, in every mode but pass-through (write-only included: OCF
// serves a wo read whose sectors are all valid from the cache); it neither
// moves the line in the LRU (it marks it referenced, see allocLocked) nor
// allocates. Anything else, or anything it is unsure of, goes the general
// way (io.go).
//
// Why the lock-free lookup is sound: with the stripe of (core, core line)
// held, or with no exclusive holder of it between the start and the end of
// the read (the stripe's sequence count says so, see stripeLock), no one can
// map or unmap that key but readers of the same stripe (eviction and
// invalidation need the stripe exclusively), and readers only map lines
// empty and then add valid bits after the data is on the cache device, and
// rewrite valid data only with what the core returned for it: the same
// bytes, unless a write to those sectors is in its core write (io.go,
// writeCore), has not returned, and overwrites them in the cache before it
// does. The mapping's chains are relinked by atomic stores under Cache.mu,
// so a walk that races with a change of some other key's chain may miss
// (and the read takes the general path), but a line it finds with the key
// is that key's line, and the valid bits it loads stand for data that is
// there and stays there while no one holds the stripe exclusively.

// maxProbe bounds the lock-free chain walk. Chains hold one or two lines on
// average; a walk that goes on longer is racing with heavy relinking, and
// the general path, under Cache.mu, answers it for sure.
const maxProbe = 16

// probe is mapping.lookup without Cache.mu, bounded by maxProbe steps. The
// caller holds the stripe of (core, coreLine).
func (c *Cache) probe(core CoreID, coreLine uint32) lineIdx {
	m, lines := &c.mu.mapping, c.mu.lines
	want := lineKey(core, coreLine)
	i := lineIdx(m.buckets[m.bucket(want)].Load())
	for range maxProbe {
		if i == noLine {
			return noLine
		}
		k := lines[i].key.Load()
		if k&keyIDMask == want {
			if id := listID(k >> keyListShift); id != listClean && id != listDirty {
				return noLine
			}
			return i
		}
		i = lineIdx(lines[i].hashNext.Load())
	}
	return noLine
}

// readHit serves p at off from the cache if it is a single-line hit. It
// reports whether it served the read; when it did not, it did nothing and
// counted nothing.
//
// It first tries without the stripe lock: it reads the stripe's sequence
// count, looks the line up, reads the cache device, and keeps the result if
// the count is still what it was, that is, if no writer, eviction or core
// removal held the stripe meanwhile. That spares the hit two atomic
// read-modify-writes, the second of which waits for the copy's stores to
// drain. When the count moved, or the cache device failed, it does it again
// under the stripe lock, where a failure is handled.
//
// Without wait it never waits: it takes the stripe lock only if no one
// holds it exclusively (a discard or a cleaning batch may hold it across
// core IO), and leaves a cache-device failure to the general path, which
// may read the core.
func (c *Cache) readHit(co *Core, p []byte, off int64, wait bool) (served bool, err error) {
	lay := &c.layout
	last := off + int64(len(p)) - 1
	coreLine := uint64(off) >> lay.lineShift
	if uint64(last)>>lay.lineShift != coreLine {
		return false, nil
	}
	if c.effectiveMode() == ModePT {
		return false, nil
	}
	inLine := off & (lay.lineSize - 1)
	want := rangeMask(int(inLine>>9), int((last&(lay.lineSize-1))>>9)+1)
	stripe := c.stripes.index(co.id, coreLine)
	lock := &c.stripes.locks[stripe]

	if seq, ok := lock.readBegin(); ok {
		i := c.hitLine(co, uint32(coreLine), want)
		if i == noLine {
			return false, nil
		}
		// Counted before the copy, not after: the atomic add would wait
		// for the copy's stores to drain.
		co.stats.countHit(stripe, uint64(len(p)), 1)
		if c.dev.ReadAt(p, lay.lineOffset(i, 0)+inLine) == nil && lock.readValid(seq) {
			c.mu.lines[i].reference()
			return true, nil
		}
		co.stats.countHit(stripe, uint64(len(p)), -1)
	}

	if !wait {
		if !lock.TryRLock() {
			return false, nil
		}
	} else {
		lock.RLock()
	}
	defer lock.RUnlock()
	i := c.hitLine(co, uint32(coreLine), want)
	if i == noLine {
		return false, nil
	}
	c.mu.lines[i].reference()
	co.stats.countHit(stripe, uint64(len(p)), 1)
	if err = c.dev.ReadAt(p, lay.lineOffset(i, 0)+inLine); err == nil {
		return true, nil
	}
	if !wait {
		co.stats.countHit(stripe, uint64(len(p)), -1)
		return false, nil
	}
	// As in readLocked: serve from the core, with dirty sectors from the
	// cache (which fails the read if they cannot be read).
	co.cacheError(true)
	var r request
	r.init(c, co, p, off, int64(len(p)))
	c.mu.Lock()
	r.lookupLocked()
	c.mu.Unlock()
	err = c.readAround(&r)
	r.done()
	return true, err
}

// hitLine returns the line holding every sector of want of coreLine, or
// noLine if there is none (or the core is going away: the general path says
// how). Unless the caller holds the stripe, the answer stands only if the
// stripe's sequence count did not move meanwhile.
func (c *Cache) hitLine(co *Core, coreLine uint32, want sectorMask) lineIdx {
	if co.state.Load() != 0 {
		return noLine
	}
	i := c.probe(co.id, coreLine)
	if i == noLine || !c.mu.lines[i].validMask().contains(want) {
		return noLine
	}
	return i
}
