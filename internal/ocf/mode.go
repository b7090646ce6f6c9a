package ocf

import (
	"fmt"
	"sync"
)

// Mode is a cache mode; it decides how reads and writes use the cache.
// The table in engine.md gives each mode's behaviour.
type Mode uint8

// The six cache modes of OCF. The numeric values are stored on disk and must
// never change.
const (
	ModeWT Mode = iota // write-through
	ModeWB             // write-back
	ModeWA             // write-around
	ModeWI             // write-invalidate
	ModePT             // pass-through
	ModeWO             // write-only
	numModes
)

var modeNames = [numModes]string{"wt", "wb", "wa", "wi", "pt", "wo"}

// String returns the mode's short name, as SPDK's RPC spells it.
func (m Mode) String() string {
	if m < numModes {
		return modeNames[m]
	}
	return fmt.Sprintf("Mode(%d)", uint8(m))
}

// ParseMode parses a short mode name (wt, wb, wa, wi, pt, wo).
func ParseMode(s string) (Mode, error) {
	for i, n := range modeNames {
		if n == s {
			return Mode(i), nil
		}
	}
	return 0, fmt.Errorf("cache mode %q: %w (want one of wt, wb, wa, wi, pt, wo)", s, ErrInvalidConfig)
}

// Modes lists every mode.
func Modes() []Mode { return []Mode{ModeWT, ModeWB, ModeWA, ModeWI, ModePT, ModeWO} }

// writesBack reports whether writes in m leave dirty data in the cache.
func (m Mode) writesBack() bool { return m == ModeWB || m == ModeWO }

// writeMode is the mode a write to co runs in: the effective mode, except
// that a write-back mode (wb, wo) becomes wt while a hold is on co.
func (c *Cache) writeMode(co *Core) Mode {
	m := c.effectiveMode()
	if m.writesBack() && co.writeThrough.Load() > 0 {
		return ModeWT
	}
	return m
}

// HoldWriteThrough makes writes to core co, or to every attached core when
// co is nil, go write-through whatever the cache mode, until the returned
// release is called (more calls of it do nothing). Reads keep the mode.
// Nothing new becomes dirty meanwhile: a write over dirty sectors writes
// the core and leaves them clean, so a flush under sustained writes
// converges to no dirty data at all. It returns once every write that
// started before it has finished (writes read their mode under their
// stripes, which it drains). Holds nest; the cache's mode, as set and
// recorded, does not change.
func (c *Cache) HoldWriteThrough(co *Core) (release func()) {
	var held []*Core
	if co != nil {
		held = []*Core{co}
	} else {
		held = c.Cores()
	}
	for _, h := range held {
		h.writeThrough.Add(1)
	}
	c.drain()
	var once sync.Once
	return func() {
		once.Do(func() {
			for _, h := range held {
				h.writeThrough.Add(-1)
			}
		})
	}
}

// WriteThroughHeld reports whether writes to co are held write-through.
func (co *Core) WriteThroughHeld() bool { return co.writeThrough.Load() > 0 }
