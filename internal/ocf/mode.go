package ocf

import "fmt"

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
