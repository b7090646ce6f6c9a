package errinj

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"

	"blockcache/internal/bdev"
)

// Device wraps a bdev.Device and asks an Injector before each IO whether to
// fail it. Checks happen in this order: the IO's validity (bdev.CheckIO),
// then Close, then Remove, then support by the inner device, then the
// injector; an IO rejected by an earlier step never reaches the injector.
//
// An injected error comes back as a *bdev.IOError naming the op and range.
// It wraps the injector's error (ErrInjected by default), plus syscall.EIO
// unless that error already carries an errno or a bdev sentinel of its own,
// so bdev.Errno gives EIO.
//
// Like the delay device, Device's Info has the inner device's Abilities and
// ReadOnly, and Device always has Discard and WriteZeroes; they return an
// error wrapping bdev.ErrNotSupported when the inner device lacks the
// ability. Closing a Device leaves the inner device open.
type Device struct {
	info    bdev.Info
	inner   bdev.Device
	inj     Injector
	removed atomic.Bool

	// mu is held shared while a call is inside the inner device and
	// exclusively by Close, so no IO reaches the inner device once Close
	// returned. closed is written under mu held exclusively.
	mu     sync.RWMutex
	closed bool
}

// Wrap returns a Device in front of d that consults inj before each IO. It
// presents d's Info unchanged, so it can stand in for d where d was
// expected; see NewErrorBdev for an SPDK-style error bdev with a name of its
// own.
func Wrap(d bdev.Device, inj Injector) *Device {
	return &Device{info: d.Info(), inner: d, inj: inj}
}

// Info implements bdev.Device.
func (d *Device) Info() bdev.Info { return d.info }

// Inner returns the wrapped device.
func (d *Device) Inner() bdev.Device { return d.inner }

// Remove simulates the device disappearing (pulled, or its backend gone):
// every later IO fails with an IOError wrapping bdev.ErrNoSuchDevice (ENODEV).
// IO already inside the inner device completes. It cannot be undone.
func (d *Device) Remove() { d.removed.Store(true) }

// ReadAt implements bdev.Device.
func (d *Device) ReadAt(p []byte, off int64) error {
	return d.do(Op{Kind: OpRead, Offset: off, Len: int64(len(p))}, func(c *Corruption) error {
		if err := d.inner.ReadAt(p, off); err != nil {
			return err
		}
		if c != nil {
			c.apply(p)
		}
		return nil
	})
}

// WriteAt implements bdev.Device.
func (d *Device) WriteAt(p []byte, off int64, fua bool) error {
	return d.do(Op{Kind: OpWrite, Offset: off, Len: int64(len(p))}, func(c *Corruption) error {
		if c != nil {
			if q := append([]byte(nil), p...); c.apply(q) {
				p = q
			}
		}
		return d.inner.WriteAt(p, off, fua)
	})
}

// Flush implements bdev.Device.
func (d *Device) Flush() error {
	return d.do(Op{Kind: OpFlush}, func(*Corruption) error { return d.inner.Flush() })
}

// Discard implements bdev.Discarder.
func (d *Device) Discard(off, length int64) error {
	return d.do(Op{Kind: OpDiscard, Offset: off, Len: length}, func(*Corruption) error {
		return bdev.Discard(d.inner, off, length)
	})
}

// WriteZeroes implements bdev.WriteZeroer.
func (d *Device) WriteZeroes(off, length int64) error {
	return d.do(Op{Kind: OpWriteZeroes, Offset: off, Len: length}, func(*Corruption) error {
		return bdev.WriteZeroes(d.inner, off, length)
	})
}

// Close implements bdev.Device. It waits for calls inside the inner device
// and leaves the inner device open.
func (d *Device) Close() error {
	d.mu.Lock()
	d.closed = true
	d.mu.Unlock()
	return nil
}

// do runs the checks in the documented order and then call, passing the
// corruption the injector asked for, if any.
func (d *Device) do(op Op, call func(*Corruption) error) error {
	name := op.Kind.String()
	if op.Kind != OpFlush {
		if err := bdev.CheckIO(&d.info, name, op.Offset, op.Len); err != nil {
			return err
		}
	}
	d.mu.RLock()
	defer d.mu.RUnlock()
	fail := func(err error) error {
		return &bdev.IOError{Op: name, Dev: d.info.Name, Offset: op.Offset, Len: op.Len, Err: err}
	}
	switch {
	case d.closed:
		return fail(bdev.ErrClosed)
	case d.removed.Load():
		return fail(fmt.Errorf("device was removed: %w", bdev.ErrNoSuchDevice))
	case op.Kind == OpDiscard && !d.info.Abilities.Discard,
		op.Kind == OpWriteZeroes && !d.info.Abilities.WriteZeroes:
		return fail(bdev.ErrNotSupported)
	}
	var corrupt *Corruption
	if err := d.inj.MaybeError(op); err != nil {
		if !errors.As(err, &corrupt) {
			if bdev.Errno(err) == syscall.EIO && !errors.Is(err, syscall.EIO) {
				err = fmt.Errorf("%w: %w", err, syscall.EIO)
			}
			return fail(err)
		}
	}
	return call(corrupt)
}
