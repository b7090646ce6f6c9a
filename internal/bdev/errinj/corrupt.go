package errinj

import "fmt"

// Corruption, returned by an Injector, asks the Device to let the call
// succeed with damaged data instead of failing it: byte Offset of the IO's
// buffer is XORed with Mask, in a copy of the buffer before a write reaches
// the inner device (the caller's buffer is left alone) and in the caller's
// buffer after a read. An Offset past the end of the buffer, a zero Mask, or
// an op that carries no data (flush, discard, write-zeroes) leaves the call
// untouched. This is the corrupt_data error type of SPDK's error bdev.
type Corruption struct {
	Offset int64
	Mask   byte
}

// Error implements error, so that an Injector can return a Corruption; the
// Device never returns it to its caller.
func (c *Corruption) Error() string {
	return fmt.Sprintf("corrupt byte %d with mask %#02x", c.Offset, c.Mask)
}

// MaybeError implements Injector: it always corrupts.
func (c *Corruption) MaybeError(Op) error { return c }

// If returns an Injector that corrupts the ops p holds for.
func (c *Corruption) If(p Predicate) Injector { return &conditional{err: c, pred: p} }

// apply damages p as c asks; it reports whether it changed anything.
func (c *Corruption) apply(p []byte) bool {
	if c.Offset < 0 || c.Offset >= int64(len(p)) || c.Mask == 0 {
		return false
	}
	p[c.Offset] ^= c.Mask
	return true
}
