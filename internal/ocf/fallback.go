package ocf

import "fmt"

// Fallback pass-through (engine.md, Errors): after a configured number of
// cache-device errors the cache serves every request pass-through (dirty
// data is still read from the cache) until the threshold is set again.

// MaxFallbackPTThreshold is the largest error threshold, as in OCF.
const MaxFallbackPTThreshold = 1_000_000

// cacheError counts a failed cache-device IO of core co (a read when read)
// and switches the cache to fallback pass-through at the threshold.
func (co *Core) cacheError(read bool) {
	if read {
		co.stats.cacheRdErrors.Add(1)
	} else {
		co.stats.cacheWrErrors.Add(1)
	}
	c := co.cache
	n := c.fallback.errors.Add(1)
	if t := c.fallback.threshold.Load(); t > 0 && n >= uint64(t) {
		c.fallback.active.Store(true)
	}
}

// effectiveMode is the mode requests run in: pass-through while the
// fallback is active.
func (c *Cache) effectiveMode() Mode {
	if c.fallback.active.Load() {
		return ModePT
	}
	return c.Mode()
}

// FallbackPT reports whether the cache fell back to pass-through, and the
// cache errors counted towards the threshold.
func (c *Cache) FallbackPT() (active bool, errors uint64) {
	return c.fallback.active.Load(), c.fallback.errors.Load()
}

// FallbackPTThreshold returns the error threshold; 0 means off.
func (c *Cache) FallbackPTThreshold() uint32 { return c.fallback.threshold.Load() }

// SetFallbackPTThreshold sets the number of cache errors after which the
// cache falls back to pass-through (0 turns it off) and starts counting
// afresh, leaving fallback. It is recorded in the metadata. If the metadata
// cannot be written, the old threshold is put back with the errors counted
// before and since, and fallback is in force if it was, or if those errors
// reach the old threshold.
func (c *Cache) SetFallbackPTThreshold(n uint32) error {
	if n > MaxFallbackPTThreshold {
		return fmt.Errorf("fallback pass-through threshold %d: %w (allowed 0..%d)", n, ErrInvalidConfig, MaxFallbackPTThreshold)
	}
	f := &c.fallback
	var oldThreshold uint32
	var oldErrors uint64
	var oldActive bool
	err := c.changeRecorded(
		func() {
			oldThreshold = f.threshold.Swap(n)
			oldErrors = f.errors.Swap(0)
			oldActive = f.active.Swap(false)
		},
		func() {
			f.threshold.Store(oldThreshold)
			errs := f.errors.Add(oldErrors)
			f.active.Store(oldActive || oldThreshold > 0 && errs >= uint64(oldThreshold))
		})
	if err != nil {
		return fmt.Errorf("set fallback pass-through threshold %d: %w", n, err)
	}
	return nil
}
