package bdev

import (
	"errors"
	"fmt"
	"syscall"
)

// Sentinel errors. Callers test for them with errors.Is; every error a device
// or the registry returns wraps at most one of them.
var (
	// ErrNotSupported means the device lacks the ability asked for; the caller
	// should take its fallback, as database/sql's driver.ErrSkip.
	ErrNotSupported = errors.New("operation not supported")
	// ErrInvalidIO marks an IO that is misaligned, empty where that is not
	// allowed, or outside the device. Nothing of it was applied.
	ErrInvalidIO = errors.New("invalid IO")
	// ErrClosed is returned by a device after Close.
	ErrClosed = errors.New("device closed")
	// ErrNoSuchDevice is returned for a name the registry does not know.
	ErrNoSuchDevice = errors.New("no such device")
	// ErrExists is returned when registering a name or alias already taken.
	ErrExists = errors.New("name already exists")
	// ErrDeviceClaimed is returned when claiming a device another owner holds.
	ErrDeviceClaimed = errors.New("device already claimed")
	// ErrInvalidName is returned when registering an empty name or alias.
	ErrInvalidName = errors.New("invalid device name")
	// ErrWritesLost is returned by a flush when writes the device had
	// acknowledged may have been lost before they became durable
	// (LossReporter): the caller must write its data again. It wraps EIO.
	ErrWritesLost = fmt.Errorf("acknowledged writes may have been lost: %w", syscall.EIO)
)

// IOError is a failed IO on a device. It unwraps to the underlying cause.
type IOError struct {
	Op     string // "read", "write", "flush", "discard", "write-zeroes"
	Dev    string // device name
	Offset int64  // byte offset of the IO
	Len    int64  // byte length of the IO
	Err    error
}

func (e *IOError) Error() string {
	return fmt.Sprintf("%s %s at offset %d length %d: %v", e.Dev, e.Op, e.Offset, e.Len, e.Err)
}

func (e *IOError) Unwrap() error { return e.Err }

// CheckIO validates an IO of length bytes at off against info: aligned to the
// block size, non-negative, and inside the device. It returns an error
// wrapping ErrInvalidIO, or nil.
func CheckIO(info *Info, op string, off, length int64) error {
	bs := int64(info.BlockSize)
	switch {
	case off < 0 || length < 0:
		return fmt.Errorf("%s %s: negative offset %d or length %d: %w", info.Name, op, off, length, ErrInvalidIO)
	case off%bs != 0 || length%bs != 0:
		return fmt.Errorf("%s %s: offset %d length %d not aligned to block size %d: %w", info.Name, op, off, length, bs, ErrInvalidIO)
	case off+length > info.SizeBytes() || off+length < off:
		return fmt.Errorf("%s %s: offset %d length %d beyond device end %d: %w", info.Name, op, off, length, info.SizeBytes(), ErrInvalidIO)
	}
	return nil
}

// Errno maps err to the errno a POSIX caller (NBD, SPDK-style RPC) expects.
// It is the one place that translation is made for device errors.
func Errno(err error) syscall.Errno {
	var en syscall.Errno
	switch {
	case err == nil:
		return 0
	case errors.As(err, &en):
		return en
	case errors.Is(err, ErrInvalidIO), errors.Is(err, ErrInvalidName):
		return syscall.EINVAL
	case errors.Is(err, ErrNotSupported):
		return syscall.EOPNOTSUPP
	case errors.Is(err, ErrNoSuchDevice), errors.Is(err, ErrClosed):
		return syscall.ENODEV
	case errors.Is(err, ErrExists):
		return syscall.EEXIST
	case errors.Is(err, ErrDeviceClaimed):
		return syscall.EBUSY
	}
	return syscall.EIO
}
