package ocf

import (
	"errors"

	"blockcache/internal/invariants"
)

// PTReason is why a request went pass-through (around the cache). Each
// pass-through request is counted under exactly one reason: the first that
// applies in the order below, which is the order the data path decides in.
type PTReason uint8

const (
	// PTFallback: the cache fell back to pass-through after too many
	// cache-device errors (fallback.go).
	PTFallback PTReason = iota
	// PTMode: the cache mode sends the request around the cache (pt; wi
	// and wa writes; wa writes that miss).
	PTMode
	// PTSeqCutoff: the request continues a sequential stream past the
	// cutoff threshold.
	PTSeqCutoff
	// PTPromotion: the promotion policy refused to insert a missing line.
	PTPromotion
	// PTNoSpace: the cache had no line to give, even after writing back
	// dirty lines for room.
	PTNoSpace
	// PTUnaligned: an IO the cache cannot hold for its alignment. The
	// engine caches every IO a volume accepts (lines are 512-byte-sector
	// granular and the volume's block size is a multiple of 512), so this
	// reason is never counted; it is kept so that dashboards written for
	// OCF's reasons find it, at zero.
	PTUnaligned
	// NumPTReasons is the number of reasons.
	NumPTReasons

	// ptUnset is a request's reason until a pass-through decision sets
	// one (request.init), so that a path that forgets to is caught (a
	// panic in test builds; counted under PTMode otherwise) rather than
	// counted under PTFallback, the zero value.
	ptUnset = NumPTReasons
)

var ptReasonNames = [NumPTReasons]string{"fallback", "mode", "seq_cutoff", "promotion", "no_space", "unaligned"}

// String returns the reason's name as metrics label it.
func (r PTReason) String() string {
	if r < NumPTReasons {
		return ptReasonNames[r]
	}
	return "unknown"
}

// modePTReason is why a request the effective mode sends around the cache
// goes pass-through: the fallback if it is active, else the mode.
func (c *Cache) modePTReason() PTReason {
	if c.fallback.active.Load() {
		return PTFallback
	}
	return PTMode
}

// ptReason is why, checked: a pass-through request counted without a
// reason is a bug, counted under PTMode in release builds.
func ptReason(why PTReason) PTReason {
	if why >= NumPTReasons {
		if invariants.Enabled {
			panic(errors.New("ocf: pass-through request counted without a reason"))
		}
		return PTMode
	}
	return why
}
