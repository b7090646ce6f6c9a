package ocf

import "fmt"

// Check walks the cache's metadata and returns every inconsistency found:
// mapping, lists and per-core counters that disagree, masks that break
// dirty ⊆ valid. A healthy cache returns nil. It takes Cache.mu, so it sees
// a consistent snapshot while IO runs.
func (c *Cache) Check() []error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var errs []error
	report := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf(format, args...))
	}
	lines := c.mu.lines

	// Lists: each line is on exactly the list it names, links are mutual,
	// counts match.
	seen := make([]bool, len(lines))
	for id := listFree; id < numLists; id++ {
		l := c.mu.lists[id]
		n, prev := 0, noLine
		for i := l.head; i != noLine; i = lines[i].next {
			if seen[i] {
				report("line %d: on a list twice (list %d)", i, id)
				break
			}
			seen[i] = true
			if lines[i].list() != id {
				report("line %d: on list %d but says list %d", i, id, lines[i].list())
			}
			if lines[i].prev != prev {
				report("line %d: prev %d, want %d", i, lines[i].prev, prev)
			}
			prev = i
			n++
		}
		if prev != l.tail {
			report("list %d: tail %d, want %d", id, l.tail, prev)
		}
		if n != l.n {
			report("list %d: count %d, walked %d", id, l.n, n)
		}
	}
	for i, s := range seen {
		if !s {
			report("line %d: on no list", i)
		}
	}

	occupied := map[CoreID]int{}
	dirty := map[CoreID]int{}
	for i := range lines {
		ln := &lines[i]
		idx := lineIdx(i)
		if !ln.mapped() {
			if !ln.validMask().empty() || !ln.dirty.empty() {
				report("free line %d: valid %x dirty %x", i, ln.validMask(), ln.dirty)
			}
			continue
		}
		if _, ok := c.mu.cores[ln.core()]; !ok {
			report("line %d: mapped to unknown core %d", i, ln.core())
		}
		if got := c.mu.mapping.lookup(lines, ln.core(), ln.coreLine()); got != idx {
			report("line %d: core %d line %d looks up to %d", i, ln.core(), ln.coreLine(), got)
		}
		if !ln.validMask().contains(ln.dirty) {
			report("line %d: dirty %x not within valid %x", i, ln.dirty, ln.validMask())
		}
		if (ln.list() == listDirty) == ln.dirty.empty() {
			report("line %d: on list %d with dirty mask %x", i, ln.list(), ln.dirty)
		}
		occupied[ln.core()]++
		if !ln.dirty.empty() {
			dirty[ln.core()]++
		}
	}
	for id, co := range c.mu.cores {
		if co.occupied != occupied[id] || co.dirtyLines != dirty[id] {
			report("core %d: counts occupied %d dirty %d, lines say %d and %d", id, co.occupied, co.dirtyLines, occupied[id], dirty[id])
		}
	}
	return errs
}
