package nbd

import (
	"sync/atomic"
	"testing"

	"blockcache/internal/bdev"
	"blockcache/internal/bdev/bdevtest"
)

// hookDevice wraps a device: hook (if set) runs before every IO and may
// block, fail it or panic. Only bdev.Device methods are promoted, so it can
// neither discard nor write zeroes, and its Info offers neither; wrap it in
// zeroingDevice for those.
type hookDevice struct {
	bdev.Device
	hook func(op string, off, n int64) error

	inflight, maxInflight atomic.Int64
	fuaWrites, writes     atomic.Int64
	flushes               atomic.Int64
}

// blockingDevice returns a RAM device of blocks 512-byte blocks whose IO
// of kind op ("read", "write"; "" any) at off (-1 any) waits until release
// is closed.
func blockingDevice(t *testing.T, name string, blocks uint64, op string, off int64) (dev *hookDevice, release chan struct{}) {
	t.Helper()
	release = make(chan struct{})
	dev = &hookDevice{Device: bdevtest.NewMalloc(t, name, blocks)}
	dev.hook = func(o string, at, n int64) error {
		if (op == "" || o == op) && (off < 0 || at == off) {
			<-release
		}
		return nil
	}
	return dev, release
}

func (d *hookDevice) Info() bdev.Info {
	in := d.Device.Info()
	in.Abilities = bdev.Abilities{}
	return in
}

func (d *hookDevice) enter(op string, off, n int64) error {
	cur := d.inflight.Add(1)
	for {
		m := d.maxInflight.Load()
		if cur <= m || d.maxInflight.CompareAndSwap(m, cur) {
			break
		}
	}
	if d.hook != nil {
		return d.hook(op, off, n)
	}
	return nil
}

func (d *hookDevice) leave() { d.inflight.Add(-1) }

func (d *hookDevice) ReadAt(p []byte, off int64) error {
	defer d.leave()
	if err := d.enter("read", off, int64(len(p))); err != nil {
		return err
	}
	return d.Device.ReadAt(p, off)
}

func (d *hookDevice) WriteAt(p []byte, off int64, fua bool) error {
	defer d.leave()
	d.writes.Add(1)
	if fua {
		d.fuaWrites.Add(1)
	}
	if err := d.enter("write", off, int64(len(p))); err != nil {
		return err
	}
	return d.Device.WriteAt(p, off, fua)
}

func (d *hookDevice) Flush() error {
	defer d.leave()
	d.flushes.Add(1)
	if err := d.enter("flush", 0, 0); err != nil {
		return err
	}
	return d.Device.Flush()
}

// zeroingDevice is a hookDevice that can also discard and write zeroes,
// passing both to the wrapped device, whose abilities its Info offers.
type zeroingDevice struct{ *hookDevice }

func (d zeroingDevice) Info() bdev.Info { return d.Device.Info() }

func (d zeroingDevice) Discard(off, n int64) error {
	defer d.leave()
	if err := d.enter("discard", off, n); err != nil {
		return err
	}
	return bdev.Discard(d.Device, off, n)
}

func (d zeroingDevice) WriteZeroes(off, n int64) error {
	defer d.leave()
	if err := d.enter("write-zeroes", off, n); err != nil {
		return err
	}
	return bdev.WriteZeroes(d.Device, off, n)
}
