package uring

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

var (
	// ErrClosed is returned by operations on a closed Ring, and by those
	// still waiting for a queue slot when Close began.
	ErrClosed = errors.New("io_uring ring closed")
	// ErrUnavailable is wrapped by New's error when the kernel refuses
	// io_uring: built without it (ENOSYS), or disabled by the sysctl
	// kernel.io_uring_disabled or a seccomp or container policy (EPERM).
	// It wraps EOPNOTSUPP, the errno a caller reports for it.
	ErrUnavailable = fmt.Errorf("io_uring is not available: %w", unix.EOPNOTSUPP)
)
