package file

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// ErrInUse is wrapped by Open's error when another opener holds the file
// or block device: an open file description lock of another process, or of
// another Device in this one, or, for a block device, an exclusive opener
// or a mount. It wraps EBUSY, the errno SPDK reports for a busy device.
var ErrInUse = fmt.Errorf("in use by another opener: %w", unix.EBUSY)

// inUseError names the busy path and, where it could be found, its holder.
type inUseError struct {
	path   string
	holder string // e.g. "blockcache pid 1234"; empty when unknown
	// blockDev says the path is a block device, whose O_EXCL open fails
	// for holders that leave no lock to find (a mount, dm, md).
	blockDev bool
}

func (e *inUseError) Error() string {
	switch {
	case e.holder != "":
		return fmt.Sprintf("%s is in use by %s", e.path, e.holder)
	case e.blockDev:
		return fmt.Sprintf("%s is in use: mounted, or opened exclusively by another program", e.path)
	}
	return fmt.Sprintf("%s is in use: another process holds a lock on it", e.path)
}

func (e *inUseError) Unwrap() error { return ErrInUse }
