// Package bdev defines the block-device seam every other package speaks: the
// Device interface, the optional abilities a device's Info lists (with the
// Discarder and WriteZeroer methods behind them), the errors devices return,
// and the Registry that names devices, hands out exclusive claims and
// announces arrivals and removals.
//
// Offsets and lengths are in bytes. Every IO must be aligned to the device's
// block size and lie inside the device; devices reject anything else with an
// error wrapping ErrInvalidIO and apply nothing.
package bdev

import (
	"fmt"

	"github.com/google/uuid"
)

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
	Abilities   Abilities // the optional operations the device offers
	// ReadOnly is set when every write-like IO fails: a file opened
	// read-only, an NBD client of a read-only export, and a wrapper
	// (delay, error injection) over either. A read-only device offers no
	// Abilities, and its NBD exports advertise NBD_FLAG_READ_ONLY.
	ReadOnly bool
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

// Abilities are the optional operations a device offers besides reading,
// writing and flushing. They are part of Info, so fixed for the device's
// life, and they are what callers go by: the NBD server advertises
// NBD_FLAG_SEND_TRIM when Discard is set, bdev_get_bdevs reports unmap and
// write_zeroes from them, and a cache volume discards when its core can.
//
// A device that sets Discard implements Discarder, and one that sets
// WriteZeroes implements WriteZeroer; the operation then fails only as a
// write to the device could (a regular file on a file system that cannot
// punch holes is the one exception, see file.Device.Discard). A device
// that does not set an ability need not implement its method, and a wrapper
// that has the method whatever it wraps sets the ability only when the
// device below has it.
type Abilities struct {
	Discard     bool // Discarder: unmap (trim) a range
	WriteZeroes bool // WriteZeroer: zero a range without a data buffer
	// ZeroesOnDiscard promises that a discarded range reads back as
	// zeroes. It is set only together with Discard.
	ZeroesOnDiscard bool
}

// Discarder is implemented by devices that can discard (unmap, trim) a
// range; Info's Abilities say whether the device offers it. After a discard
// the range reads back as zeroes when Abilities.ZeroesOnDiscard is set, and
// as unspecified data otherwise.
type Discarder interface {
	Discard(off, length int64) error
}

// WriteZeroer is implemented by devices that can zero a range without a data
// buffer; Info's Abilities say whether the device offers it. The range reads
// back as zeroes afterwards.
type WriteZeroer interface {
	WriteZeroes(off, length int64) error
}

// Discard discards a range of d, or returns an error wrapping
// ErrNotSupported, doing nothing, when d's Abilities lack Discard.
func Discard(d Device, off, length int64) error {
	if x, ok := d.(Discarder); ok && d.Info().Abilities.Discard {
		return x.Discard(off, length)
	}
	return fmt.Errorf("%s discard: %w", d.Info().Name, ErrNotSupported)
}

// WriteZeroes zeroes a range of d, or returns an error wrapping
// ErrNotSupported, doing nothing, when d's Abilities lack WriteZeroes.
func WriteZeroes(d Device, off, length int64) error {
	if x, ok := d.(WriteZeroer); ok && d.Info().Abilities.WriteZeroes {
		return x.WriteZeroes(off, length)
	}
	return fmt.Errorf("%s write-zeroes: %w", d.Info().Name, ErrNotSupported)
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
