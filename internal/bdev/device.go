// Package bdev defines the block-device seam every other package speaks: the
// Device interface, its optional abilities, the errors devices return, and the
// Registry that names devices, hands out exclusive claims and announces
// arrivals and removals.
//
// Offsets and lengths are in bytes. Every IO must be aligned to the device's
// block size and lie inside the device; devices reject anything else with an
// error wrapping ErrInvalidIO and apply nothing.
package bdev

import "github.com/google/uuid"

// SectorSize is the 512-byte unit in which the cache engine tracks validity
// and dirtiness and the smallest block size any device may have.
const SectorSize = 512

// Info describes a device. It is fixed for the life of the device.
type Info struct {
	Name        string    // unique among registered devices
	UUID        uuid.UUID // stable identity; listed as an alias in lower case
	ProductName string    // e.g. "Malloc disk", as SPDK names its modules
	BlockSize   uint32    // bytes; a multiple of SectorSize
	NumBlocks   uint64
}

// SizeBytes is the capacity of the device in bytes.
func (i Info) SizeBytes() int64 { return int64(i.BlockSize) * int64(i.NumBlocks) }

// Device is a block device.
//
// All methods are safe for concurrent use by many goroutines, including
// overlapping ranges; the result of concurrent overlapping writes is one of
// the writes per block, never a mix inside a block. A write returns once the
// data is visible to later reads; it is durable (survives power loss) only
// after it was written with fua set or a later Flush returned nil.
//
// After Close returns, every method returns an error wrapping ErrClosed.
type Device interface {
	// Info returns the device's fixed description. It does not allocate.
	Info() Info
	// ReadAt fills p from the device starting at byte offset off.
	ReadAt(p []byte, off int64) error
	// WriteAt writes p at byte offset off. With fua the data is durable when
	// WriteAt returns nil.
	WriteAt(p []byte, off int64, fua bool) error
	// Flush makes every write that returned before Flush was called durable.
	Flush() error
	// Close releases the device's resources. In-flight calls finish first.
	Close() error
}

// Discarder is implemented by devices that can discard (unmap, trim) a range.
// After a discard the range reads back as zeroes on devices that also
// implement DiscardZeroer returning true (see ZeroesOnDiscard), and as
// unspecified data otherwise.
type Discarder interface {
	Discard(off, length int64) error
}

// WriteZeroer is implemented by devices that can zero a range without a data
// buffer. The range reads back as zeroes afterwards.
type WriteZeroer interface {
	WriteZeroes(off, length int64) error
}

// DiscardZeroer is implemented by Discarders that say whether a discarded
// range reads back as zeroes.
type DiscardZeroer interface {
	ZeroesOnDiscard() bool
}

// AbilityReporter is implemented by wrapper devices (delay, errinj) whose
// Discard and WriteZeroes methods exist whatever they wrap and return an
// error wrapping ErrNotSupported when the wrapped device lacks the ability.
// CanDiscard and CanWriteZeroes consult it, so a wrapper reports exactly the
// abilities of the device below it.
type AbilityReporter interface {
	SupportsDiscard() bool
	SupportsWriteZeroes() bool
}

// ZeroesOnDiscard reports whether a discard on d is guaranteed to make the
// range read back as zeroes.
func ZeroesOnDiscard(d Device) bool {
	x, ok := d.(DiscardZeroer)
	return ok && CanDiscard(d) && x.ZeroesOnDiscard()
}

// Discard discards a range of d, or returns ErrNotSupported when d cannot.
func Discard(d Device, off, length int64) error {
	if x, ok := d.(Discarder); ok {
		return x.Discard(off, length)
	}
	return ErrNotSupported
}

// WriteZeroes zeroes a range of d, or returns ErrNotSupported when d cannot.
func WriteZeroes(d Device, off, length int64) error {
	if x, ok := d.(WriteZeroer); ok {
		return x.WriteZeroes(off, length)
	}
	return ErrNotSupported
}

// CanDiscard reports whether d implements Discarder (and, when d is an
// AbilityReporter, whether it reports SupportsDiscard).
func CanDiscard(d Device) bool {
	_, ok := d.(Discarder)
	if r, isReporter := d.(AbilityReporter); ok && isReporter {
		return r.SupportsDiscard()
	}
	return ok
}

// CanWriteZeroes reports whether d implements WriteZeroer (and, when d is an
// AbilityReporter, whether it reports SupportsWriteZeroes).
func CanWriteZeroes(d Device) bool {
	_, ok := d.(WriteZeroer)
	if r, isReporter := d.(AbilityReporter); ok && isReporter {
		return r.SupportsWriteZeroes()
	}
	return ok
}

// Immediate is implemented by devices whose every IO completes without
// waiting for anything but the CPU and memory: RAM disks (malloc) and the
// null device. A transport may execute their IO on the goroutine that reads
// requests, and a cache whose devices are all immediate is immediate too.
// Wrappers (delay, error injection) are not, whatever they wrap.
type Immediate interface {
	Immediate()
}

// IsImmediate reports whether d implements Immediate.
func IsImmediate(d Device) bool {
	_, ok := d.(Immediate)
	return ok
}

// TryReader is implemented by devices that can tell a read they can serve at
// once from one that may wait. TryReadAt either serves the read exactly as
// ReadAt would and returns served true, or does nothing and returns false
// when serving it could wait: for a slower device below (a cache miss), or
// for a lock held across such IO by another request. A cache volume serves
// a read that hits.
//
// Transports use it to execute on the goroutine that reads requests only
// work that cannot hold up the requests behind it, and to hand the rest to
// goroutines of their own (see the NBD server's transmission).
type TryReader interface {
	TryReadAt(p []byte, off int64) (served bool, err error)
}

// TryWriter is TryReader's counterpart for writes: TryWriteAt writes as
// WriteAt would and returns true, or does nothing and returns false when the
// write could wait.
type TryWriter interface {
	TryWriteAt(p []byte, off int64, fua bool) (served bool, err error)
}

// TryReadAt serves a read of d at once if d can: always when d is
// Immediate, else as d's TryReadAt decides. It reports false, doing
// nothing, if d could wait or cannot tell.
func TryReadAt(d Device, p []byte, off int64) (served bool, err error) {
	switch x := d.(type) {
	case Immediate:
		return true, d.ReadAt(p, off)
	case TryReader:
		return x.TryReadAt(p, off)
	}
	return false, nil
}

// TryWriteAt is TryReadAt for writes.
func TryWriteAt(d Device, p []byte, off int64, fua bool) (served bool, err error) {
	switch x := d.(type) {
	case Immediate:
		return true, d.WriteAt(p, off, fua)
	case TryWriter:
		return x.TryWriteAt(p, off, fua)
	}
	return false, nil
}
