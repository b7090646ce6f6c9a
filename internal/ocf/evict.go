package ocf

// Making room for a miss when every line is dirty, in use or waiting for its
// metadata. The request lets go of its stripes and writes back victims of
// its own: dirty lines from the LRU end of the dirty list whose stripes it
// can take at once (TryLock, under Cache.mu). Holding a victim's stripe is
// its claim: a concurrent miss, or the background cleaner, passes over it
// and claims the next one, so concurrent misses write their victims back in
// parallel, each holding only its victims' stripes across the core write.
// A line some request is using is passed over the same way.
//
// The victims, clean now, go to the LRU end of the clean list, where the
// request's retry (or a concurrent one's) evicts them once their clean
// entries are durable. If no victim can be claimed the retry finds no line
// and the request goes pass-through (wr_pt, rd_pt), as OCF's does when it
// cannot map: one core IO, never a wait for someone else's write-back.

// maxClaimScan bounds how many lines of the dirty list one claim looks at,
// so that Cache.mu is held briefly even when most stripes are busy.
const maxClaimScan = 4096

// cleanForRoom makes room for request r, which found no line to map and
// holds no stripe now: it writes back up to r.n victims it claims, and
// writes the metadata so that they (and any line whose durable entry still
// claims dirty data) can be reused. Victims under r's own stripes are
// passed over: r's retry, holding those stripes, could not evict them.
// Errors leave lines as they were; the request then falls back to
// pass-through.
func (c *Cache) cleanForRoom(r *request) {
	a0, a1, b0, b1 := c.stripes.span(r.co.id, r.first, r.n)
	mine := func(s int) bool { return a0 <= s && s < a1 || b0 <= s && s < b1 }
	c.mu.Lock()
	cands := c.claimDirtyLocked(nil, int(r.n), mine)
	c.mu.Unlock()
	_, _ = c.cleanClaimed(cands, c.cleaningInflight())
	_ = c.syncMetadata(false)
}

// claimDirtyLocked claims up to limit dirty lines of attached cores from
// the LRU end of the dirty list: each with its stripe taken by TryLock,
// one line a stripe, passing over stripes skip reports (nil: none). A
// line hit since it was last moved gets a second chance instead (moved to
// the head, its mark cleared), as in allocLocked. The caller must pass the
// result to cleanClaimed, which lets go of the stripes.
func (c *Cache) claimDirtyLocked(cands []cleanCandidate, limit int, skip func(stripe int) bool) []cleanCandidate {
	lines := c.mu.lines
	scanned := 0
	for j := c.mu.lists[listDirty].tail; j != noLine && len(cands) < limit && scanned < maxClaimScan; scanned++ {
		prev := lines[j].prev
		ln := &lines[j]
		if ln.takeReferenced() {
			c.mu.lists.moveToFront(lines, listDirty, j)
			if prev == noLine {
				continue // j was and is the head: it is next in order
			}
			j = prev
			continue
		}
		co := c.mu.cores[ln.core()]
		if co.dev != nil {
			s := c.stripes.index(ln.core(), uint64(ln.coreLine()))
			if (skip == nil || !skip(s)) && c.stripes.locks[s].TryLock() {
				cands = append(cands, cleanCandidate{idx: j, core: co, coreLine: ln.coreLine(), dirty: ln.dirty, dev: co.dev, stripe: s})
			}
		}
		j = prev
	}
	return cands
}

// cleanClaimed writes back lines claimed by claimDirtyLocked, at most
// inflight at once, moves them to the LRU end of the clean list, and lets
// go of their stripes. The caller writes the metadata. A single line is
// written with FUA (one core IO), more are followed by a flush of the
// cores.
func (c *Cache) cleanClaimed(cands []cleanCandidate, inflight int) (int, error) {
	defer func() {
		for _, cd := range cands {
			c.stripes.locks[cd.stripe].Unlock()
		}
	}()
	return c.writeBackLines(cands, true, inflight, len(cands) == 1)
}
