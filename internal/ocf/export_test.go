package ocf

// SectorState is what the cache holds of one 512-byte sector of a core.
type SectorState struct{ Valid, Dirty bool }

// SectorStates returns, for tests, the cache's state of each sector of
// [off, off+n) of co, read under Cache.mu. It takes no stripe lock: the
// answer stands only while no IO to the range runs.
func (co *Core) SectorStates(off, n int64) []SectorState {
	c := co.cache
	out := make([]SectorState, n/sectorSize)
	c.mu.Lock()
	defer c.mu.Unlock()
	for k := range out {
		sector := off/sectorSize + int64(k)
		coreLine := uint32(sector * sectorSize >> c.layout.lineShift)
		i := c.mu.mapping.lookup(c.mu.lines, co.id, coreLine)
		if i == noLine {
			continue
		}
		s := int(sector % int64(c.sectorsPerLine))
		ln := &c.mu.lines[i]
		out[k] = SectorState{Valid: ln.validMask().has(s), Dirty: ln.dirty.has(s)}
	}
	return out
}
