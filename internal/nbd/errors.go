package nbd

import (
	"errors"
	"fmt"
	"syscall"

	"blockcache/internal/bdev"
	"blockcache/internal/nbdproto"
)

// Errors returned by the Server's methods.
var (
	// ErrServerClosed is returned by Serve after Shutdown was called, as
	// net/http's ErrServerClosed marks a clean stop.
	ErrServerClosed = errors.New("nbd: server closed")
	// ErrExportExists is returned by AddExport for a name already exported.
	// It wraps bdev.ErrExists.
	ErrExportExists = fmt.Errorf("nbd: export already exists: %w", bdev.ErrExists)
	// ErrNoSuchExport is returned by RemoveExport for an unknown name. It
	// wraps bdev.ErrNoSuchDevice.
	ErrNoSuchExport = fmt.Errorf("nbd: no such export: %w", bdev.ErrNoSuchDevice)
	// ErrInvalidExport is returned by AddExport for an Export it cannot
	// serve (no device, a block size NBD cannot express, a bad name). It
	// wraps syscall.EINVAL.
	ErrInvalidExport = fmt.Errorf("nbd: invalid export: %w", syscall.EINVAL)
	// ErrInvalidOptions is returned by NewServer for Options out of range.
	// It wraps syscall.EINVAL.
	ErrInvalidOptions = fmt.Errorf("nbd: invalid options: %w", syscall.EINVAL)
)

// Reasons validate rejects a request for. Each wraps the errno the client
// receives; errnoFor does the translation.
var (
	errUnknownCommand = fmt.Errorf("unknown or unadvertised command: %w", syscall.EINVAL)
	errBadFlags       = fmt.Errorf("command flags not valid for this command: %w", syscall.EINVAL)
	errReadOnly       = fmt.Errorf("export is read-only: %w", syscall.EPERM)
	errFlushRange     = fmt.Errorf("flush with non-zero offset or length: %w", syscall.EINVAL)
	errZeroLength     = fmt.Errorf("zero-length request: %w", syscall.EINVAL)
	errMisaligned     = fmt.Errorf("offset or length not a multiple of the minimum block size: %w", syscall.EINVAL)
	errTooLarge       = fmt.Errorf("payload larger than the maximum of %d bytes: %w", maxPayloadBytes, syscall.EOVERFLOW)
	errReadPastEnd    = fmt.Errorf("read beyond the end of the export: %w", syscall.EINVAL)
	errWritePastEnd   = fmt.Errorf("write beyond the end of the export: %w", syscall.ENOSPC)
)

// errnoFor maps any error of a request to the NBD error value sent to the
// client. It is the only place that translation is made (nbdkit's
// nbd_errno): device errors go through bdev.Errno, and the errors this
// package makes wrap a syscall.Errno.
func errnoFor(err error) uint32 {
	if err == nil {
		return 0
	}
	switch bdev.Errno(err) {
	case syscall.EPERM, syscall.EROFS, syscall.EACCES:
		return nbdproto.EPERM
	case syscall.ENOMEM:
		return nbdproto.ENOMEM
	case syscall.EINVAL:
		return nbdproto.EINVAL
	case syscall.ENOSPC, syscall.EDQUOT, syscall.EFBIG:
		return nbdproto.ENOSPC
	case syscall.EOVERFLOW:
		return nbdproto.EOVERFLOW
	case syscall.EOPNOTSUPP:
		return nbdproto.ENOTSUP
	case syscall.ESHUTDOWN, syscall.ENODEV:
		// The device is gone (closed or hot-removed): ESHUTDOWN tells the
		// client to disconnect rather than retry.
		return nbdproto.ESHUTDOWN
	}
	return nbdproto.EIO
}
