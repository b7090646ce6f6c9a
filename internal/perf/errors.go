package perf

import "errors"

// Sentinel errors. Every error Run and the parsers return wraps at most one.
var (
	// ErrInvalidOption marks an option value the load generator refuses: an
	// unknown workload, a size it cannot read, a queue depth or duration
	// out of range, an IO size that is not a multiple of a device's block
	// size.
	ErrInvalidOption = errors.New("invalid option")
	// ErrMiscompare is an IO of the verify workload that read back data
	// other than what it wrote.
	ErrMiscompare = errors.New("data read back differs from data written")
	// ErrNotSupported is returned for a workload whose operation the
	// device lacks (unmap on a device that cannot discard).
	ErrNotSupported = errors.New("workload not supported by the device")
)
