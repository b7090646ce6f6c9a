package file

import (
	"errors"
	"fmt"
	"time"

	"golang.org/x/sys/unix"

	"blockcache/internal/bdev"
	"blockcache/internal/bdev/uring"
)

// Engine is how a device's IO reaches the kernel. Locks, queue depth,
// O_DIRECT and bounce buffers are the same whichever it is.
type Engine int

const (
	// EngineSync makes positioned system calls (pread, pwrite,
	// fdatasync, fallocate) from the calling goroutine, each blocking a
	// thread while it runs: SPDK's aio bdev.
	EngineSync Engine = iota
	// EngineUring submits the same operations to an io_uring of the
	// device's queue depth (uring.Ring): IOs wait in the kernel without a
	// thread each, concurrent IOs share one io_uring_enter, and
	// completions arrive through Go's netpoller, with no thread blocked
	// for them. SPDK's uring bdev. Where the kernel refuses io_uring,
	// Open's error wraps uring.ErrUnavailable (EOPNOTSUPP).
	EngineUring
)

// UringProductName is the product name of a device opened with
// EngineUring, as SPDK's uring bdev reports.
const UringProductName = "URING bdev"

func (e Engine) String() string {
	switch e {
	case EngineSync:
		return "sync"
	case EngineUring:
		return "uring"
	}
	return fmt.Sprintf("Engine(%d)", int(e))
}

// releaseWait bounds how long OpenUring waits for a lock no process holds
// to go away.
const releaseWait = 2 * time.Second

// OpenUring is Open with EngineUring, made for reopening a file after the
// process that had it on a ring was killed. Such a process's open file
// description, and the lock on it, outlive the process by a few
// milliseconds: the kernel tears its ring down asynchronously, and the
// requests that were in flight hold the file until they finish. So while
// path is refused as in use with no process found holding it, OpenUring
// retries, for up to two seconds; a path another process or device holds is
// refused at once.
func OpenUring(name, path string, opts Options) (*Device, error) {
	opts.Engine = EngineUring
	deadline := time.Now().Add(releaseWait)
	for {
		d, err := Open(name, path, opts)
		var busy *inUseError
		if err == nil || !errors.As(err, &busy) || busy.holder != "" || time.Now().After(deadline) {
			return d, err
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// startEngine sets up engine e for an opened device of the given queue
// depth, with a ring's options.
func (d *Device) startEngine(e Engine, depth int, ropts uring.Options) error {
	switch e {
	case EngineSync:
		return nil
	case EngineUring:
		r, err := uring.New(min(depth, uring.MaxDepth), ropts)
		if err != nil {
			return err
		}
		d.sys = uringSysCalls(r)
		d.stopRing = r.Close
		d.info.ProductName = UringProductName
		return nil
	}
	return fmt.Errorf("unknown IO engine %v: %w", e, bdev.ErrInvalidIO)
}

// stopEngine releases what startEngine set up; the device has no IO in
// flight.
func (d *Device) stopEngine() error {
	if d.stopRing == nil {
		return nil
	}
	err := d.stopRing()
	d.stopRing = nil
	return err
}

// uringSysCalls are the data path's system calls, made through r.
func uringSysCalls(r *uring.Ring) sysCalls {
	return sysCalls{
		pread: r.Pread,
		pwrite: func(fd int, p []byte, off int64) (int, error) {
			return r.Pwrite(fd, p, off, 0)
		},
		pwriteDSync: func(fd int, p []byte, off int64) (int, error) {
			return r.Pwrite(fd, p, off, unix.RWF_DSYNC)
		},
		fdatasync: func(fd int) error { return r.Fsync(fd, true) },
		fallocate: r.Fallocate,
	}
}
