package ocf

import "time"

// PromotionPolicy decides whether a missed core line may be inserted into the
// cache. Implementations must be safe for concurrent use; the engine calls
// them without holding its locks. The cleaning, promotion and sequential
// cutoff policies of engine.md plug in here.
type PromotionPolicy interface {
	// Promote reports whether coreLine of core may be inserted now.
	// occupancyPct is the share of cache lines in use, 0..100.
	Promote(core CoreID, coreLine uint64, occupancyPct int) bool
}

// PromoteAlways is the `always` promotion policy: every miss is inserted.
type PromoteAlways struct{}

// Promote implements PromotionPolicy.
func (PromoteAlways) Promote(CoreID, uint64, int) bool { return true }

// SeqCutoff decides whether a request bypasses the cache because it belongs
// to a sequential stream. Implementations must be safe for concurrent use.
type SeqCutoff interface {
	// Bypass reports whether the request of length bytes at off on core goes
	// pass-through. cacheFull reports engine.md's notion of a full cache.
	Bypass(core CoreID, off, length int64, write, cacheFull bool) bool
}

// CutoffNever is the `never` sequential cutoff policy.
type CutoffNever struct{}

// Bypass implements SeqCutoff.
func (CutoffNever) Bypass(CoreID, int64, int64, bool, bool) bool { return false }

// Clock supplies time to the policies, so tests can drive it.
type Clock interface{ Now() time.Time }

// SystemClock is the wall clock.
type SystemClock struct{}

// Now implements Clock.
func (SystemClock) Now() time.Time { return time.Now() }
