package file

import (
	"errors"
	"fmt"
	"io"

	"golang.org/x/sys/unix"

	"blockcache/internal/aligned"
	"blockcache/internal/bdev"
	"blockcache/internal/invariants"
)

// sysCalls are the system calls the data path makes. Open installs
// realSysCalls; tests in this package substitute failing or short versions.
type sysCalls struct {
	pread       func(fd int, p []byte, off int64) (int, error)
	pwrite      func(fd int, p []byte, off int64) (int, error)
	pwriteDSync func(fd int, p []byte, off int64) (int, error) // durable on return
	fdatasync   func(fd int) error
	fallocate   func(fd int, mode uint32, off, length int64) error
}

var realSysCalls = sysCalls{
	pread:  unix.Pread,
	pwrite: unix.Pwrite,
	pwriteDSync: func(fd int, p []byte, off int64) (int, error) {
		return unix.Pwritev2(fd, [][]byte{p}, off, unix.RWF_DSYNC)
	},
	fdatasync: unix.Fdatasync,
	fallocate: unix.Fallocate,
}

// ReadAt implements bdev.Device.
func (d *Device) ReadAt(p []byte, off int64) error {
	fd, err := d.begin("read", off, int64(len(p)), false)
	if err != nil {
		return err
	}
	defer d.end()
	if err := d.readAll(fd, p, off); err != nil {
		return d.ioError("read", off, int64(len(p)), err)
	}
	return nil
}

// WriteAt implements bdev.Device. With fua the data is written with
// RWF_DSYNC, or, where the kernel lacks it, written and then fdatasync'ed.
func (d *Device) WriteAt(p []byte, off int64, fua bool) error {
	fd, err := d.begin("write", off, int64(len(p)), true)
	if err != nil {
		return err
	}
	defer d.end()
	if fua {
		err = d.writeDurable(fd, p, off)
	} else {
		err = d.writeAll(fd, p, off, false)
	}
	if err != nil {
		return d.ioError("write", off, int64(len(p)), err)
	}
	return nil
}

// Flush implements bdev.Device with fdatasync, which takes a queue slot as
// any IO does. It is a no-op on a read-only device, which has nothing to
// make durable.
func (d *Device) Flush() error {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.fd < 0 {
		return d.ioError("flush", 0, 0, bdev.ErrClosed)
	}
	if d.readOnly {
		return nil
	}
	d.slots <- struct{}{}
	defer func() { <-d.slots }()
	if err := d.fdatasync(d.fd); err != nil {
		return d.ioError("flush", 0, 0, err)
	}
	return nil
}

// readAll fills p from off, through a bounce buffer when Direct IO needs
// an aligned one.
func (d *Device) readAll(fd int, p []byte, off int64) error {
	if aligned.Is(p, d.memAlign) {
		return d.transfer(d.sys.pread, fd, p, off)
	}
	bp := d.bounce.get()
	defer d.bounce.put(bp)
	for len(p) > 0 {
		b := (*bp)[:min(len(p), len(*bp))]
		if err := d.transfer(d.sys.pread, fd, b, off); err != nil {
			return err
		}
		copy(p, b)
		p = p[len(b):]
		off += int64(len(b))
	}
	return nil
}

// writeAll writes p at off, through a bounce buffer when Direct IO needs an
// aligned one; with dsync each piece is durable when its call returns.
func (d *Device) writeAll(fd int, p []byte, off int64, dsync bool) error {
	call := d.sys.pwrite
	if dsync {
		call = d.sys.pwriteDSync
	}
	if aligned.Is(p, d.memAlign) {
		return d.transfer(call, fd, p, off)
	}
	bp := d.bounce.get()
	defer d.bounce.put(bp)
	for len(p) > 0 {
		b := (*bp)[:min(len(p), len(*bp))]
		copy(b, p)
		if err := d.transfer(call, fd, b, off); err != nil {
			return err
		}
		p = p[len(b):]
		off += int64(len(b))
	}
	return nil
}

// writeDurable writes p at off so that it is durable on return.
func (d *Device) writeDurable(fd int, p []byte, off int64) error {
	if !d.noDSyncWrite.Load() {
		err := d.writeAll(fd, p, off, true)
		if !errors.Is(err, unix.ENOSYS) && !errors.Is(err, unix.EOPNOTSUPP) {
			return err
		}
		d.noDSyncWrite.Store(true) // nothing was written: the first call failed
	}
	if err := d.writeAll(fd, p, off, false); err != nil {
		return err
	}
	return d.fdatasync(fd)
}

// transfer repeats call until all of p is transferred at off, resuming after
// short transfers and retrying on EINTR. In invariant builds it sometimes
// asks for a shorter transfer on purpose, so the resume path runs in tests.
func (d *Device) transfer(call func(int, []byte, int64) (int, error), fd int, p []byte, off int64) error {
	bs := int(d.info.BlockSize)
	for len(p) > 0 {
		q := p
		if invariants.Enabled && len(q) >= 2*bs && invariants.Sometimes(5) {
			q = q[:len(q)/2/bs*bs]
		}
		n, err := call(fd, q, off)
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			return err
		case n <= 0:
			return fmt.Errorf("%d of %d bytes left at offset %d: %w", len(p), len(p), off, io.ErrUnexpectedEOF)
		}
		p = p[n:]
		off += int64(n)
	}
	return nil
}

// fdatasync retries on EINTR.
func (d *Device) fdatasync(fd int) error {
	for {
		if err := d.sys.fdatasync(fd); err != unix.EINTR {
			return err
		}
	}
}

// fallocate retries on EINTR.
func (d *Device) fallocate(fd int, mode uint32, off, length int64) error {
	for {
		if err := d.sys.fallocate(fd, mode, off, length); err != unix.EINTR {
			return err
		}
	}
}
