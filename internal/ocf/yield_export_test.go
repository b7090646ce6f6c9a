package ocf

import "unsafe"

// SameStripe reports, for tests, whether core lines a and b of co are
// guarded by the same stripe.
func (co *Core) SameStripe(a, b uint64) bool {
	s := &co.cache.stripes
	return s.index(co.id, a) == s.index(co.id, b)
}

// StripeLockSize is the size of one stripe's locks.
const StripeLockSize = unsafe.Sizeof(stripeLock{})
