// Package null provides SPDK's null bdev: a device of any size that stores
// nothing. Reads return zeroes and writes are dropped, so it measures the
// cost of everything above the device.
package null

import (
	"fmt"
	"sync/atomic"

	"github.com/google/uuid"

	"blockcache/internal/bdev"
)

// Device is a block device that stores nothing; every range reads as
// zeroes. Like SPDK's null bdev it implements WriteZeroes (trivially) but not
// Discard, so it reports the same supported IO types.
type Device struct {
	info   bdev.Info
	closed atomic.Bool
}

// New returns a device of numBlocks blocks of blockSize bytes. A nil id is
// replaced by a random UUID.
func New(name string, id uuid.UUID, blockSize uint32, numBlocks uint64) (*Device, error) {
	if blockSize == 0 || blockSize%bdev.SectorSize != 0 {
		return nil, fmt.Errorf("null %q: block size %d is not a multiple of %d: %w", name, blockSize, bdev.SectorSize, bdev.ErrInvalidIO)
	}
	if numBlocks == 0 {
		return nil, fmt.Errorf("null %q: zero blocks: %w", name, bdev.ErrInvalidIO)
	}
	if numBlocks > uint64(1<<63-1)/uint64(blockSize) {
		return nil, fmt.Errorf("null %q: %d blocks of %d bytes overflow a byte offset: %w", name, numBlocks, blockSize, bdev.ErrInvalidIO)
	}
	if id == uuid.Nil {
		id = uuid.New()
	}
	return &Device{info: bdev.Info{Name: name, UUID: id, ProductName: "Null disk", BlockSize: blockSize, NumBlocks: numBlocks,
		Abilities: bdev.Abilities{WriteZeroes: true}}}, nil
}

// Info implements bdev.Device.
func (d *Device) Info() bdev.Info { return d.info }

// check validates an IO and reports ErrClosed after Close.
func (d *Device) check(op string, off, length int64) error {
	if err := bdev.CheckIO(&d.info, op, off, length); err != nil {
		return err
	}
	if d.closed.Load() {
		return fmt.Errorf("%s %s: %w", d.info.Name, op, bdev.ErrClosed)
	}
	return nil
}

// ReadAt implements bdev.Device; p is filled with zeroes.
func (d *Device) ReadAt(p []byte, off int64) error {
	if err := d.check("read", off, int64(len(p))); err != nil {
		return err
	}
	clear(p)
	return nil
}

// WriteAt implements bdev.Device; the data is dropped.
func (d *Device) WriteAt(p []byte, off int64, fua bool) error {
	return d.check("write", off, int64(len(p)))
}

// Immediate implements bdev.Immediate: IO on a null device never waits.
func (d *Device) Immediate() {}

// Flush implements bdev.Device.
func (d *Device) Flush() error {
	if d.closed.Load() {
		return fmt.Errorf("%s flush: %w", d.info.Name, bdev.ErrClosed)
	}
	return nil
}

// WriteZeroes implements bdev.WriteZeroer.
func (d *Device) WriteZeroes(off, length int64) error { return d.check("write-zeroes", off, length) }

// Close implements bdev.Device. It is idempotent.
func (d *Device) Close() error {
	d.closed.Store(true)
	return nil
}
