// Package malloc provides a RAM-backed block device, SPDK's malloc bdev.
package malloc

import (
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/google/uuid"

	"blockcache/internal/bdev"
)

// Device is a block device held in memory. Discard zeroes the range.
type Device struct {
	info bdev.Info

	// data is the device's memory, nil after Close. IO loads it once; IO
	// already running when Close swaps it out finishes on the old memory,
	// which the garbage collector frees after it. Each chunk of lockChunk
	// bytes is copied under its stripe lock, so overlapping IO never tears
	// a block; IO to distinct chunks runs in parallel.
	data   atomic.Pointer[[]byte]
	stripe []paddedMutex // up to maxStripes, one per chunk on small devices
}

// maxStripes is the most stripe locks a device has: 64 KiB of locks, so
// that IO from different CPUs to different chunks rarely shares a lock.
const maxStripes = 1024

// paddedMutex is a chunk's lock (reads share it) alone on its CPU cache
// line, so that IO to neighbouring chunks from different CPUs does not
// contend on the line.
type paddedMutex struct {
	sync.RWMutex
	_ [64 - 24]byte
}

// New returns a zero-filled device of numBlocks blocks of blockSize bytes.
func New(name string, id uuid.UUID, blockSize uint32, numBlocks uint64) (*Device, error) {
	if blockSize == 0 || blockSize%bdev.SectorSize != 0 {
		return nil, fmt.Errorf("malloc %q: block size %d is not a multiple of %d: %w", name, blockSize, bdev.SectorSize, bdev.ErrInvalidIO)
	}
	if numBlocks == 0 {
		return nil, fmt.Errorf("malloc %q: zero blocks: %w", name, bdev.ErrInvalidIO)
	}
	if id == uuid.Nil {
		id = uuid.New()
	}
	d := &Device{info: bdev.Info{Name: name, UUID: id, ProductName: "Malloc disk", BlockSize: blockSize, NumBlocks: numBlocks}}
	data := make([]byte, int64(blockSize)*int64(numBlocks))
	d.data.Store(&data)
	d.stripe = make([]paddedMutex, min(maxStripes, (int64(len(data))+d.lockChunk()-1)/d.lockChunk()))
	return d, nil
}

// Info implements bdev.Device.
func (d *Device) Info() bdev.Info { return d.info }

// lockChunk is the span one stripe lock covers: whole blocks, at least
// lockSpan bytes, so that no block is ever torn, an aligned 4 KiB IO takes
// one lock, and a 128 KiB one eight rather than thirty-two.
func (d *Device) lockChunk() int64 {
	bs := int64(d.info.BlockSize)
	if bs >= lockSpan {
		return bs
	}
	return lockSpan / bs * bs
}

// lockSpan is the span of a stripe lock on devices of smaller blocks.
const lockSpan = 16 << 10

// copyBlocks copies n bytes chunk by chunk under each chunk's stripe lock so
// that concurrent overlapping IO never tears a block. A nil src with toDevice
// zeroes the range.
func (d *Device) copyBlocks(dst, src []byte, off, n int64, toDevice bool) {
	chunk := d.lockChunk()
	for done := int64(0); done < n; {
		pos := off + done
		step := min(chunk-pos%chunk, n-done)
		m := &d.stripe[(pos/chunk)%int64(len(d.stripe))]
		if toDevice {
			m.Lock()
		} else {
			m.RLock()
		}
		switch {
		case toDevice && src == nil:
			clear(dst[pos : pos+step])
		case toDevice:
			copy(dst[pos:pos+step], src[done:done+step])
		default:
			copy(dst[done:done+step], src[pos:pos+step])
		}
		if toDevice {
			m.Unlock()
		} else {
			m.RUnlock()
		}
		done += step
	}
}

// ReadAt implements bdev.Device.
func (d *Device) ReadAt(p []byte, off int64) error {
	if err := bdev.CheckIO(&d.info, "read", off, int64(len(p))); err != nil {
		return err
	}
	data := d.memory()
	if data == nil {
		return bdev.ErrClosed
	}
	d.copyBlocks(p, data, off, int64(len(p)), false)
	return nil
}

// WriteAt implements bdev.Device. Memory is always durable, so fua is moot.
func (d *Device) WriteAt(p []byte, off int64, fua bool) error {
	if err := bdev.CheckIO(&d.info, "write", off, int64(len(p))); err != nil {
		return err
	}
	data := d.memory()
	if data == nil {
		return bdev.ErrClosed
	}
	d.copyBlocks(data, p, off, int64(len(p)), true)
	return nil
}

// Flush implements bdev.Device.
func (d *Device) Flush() error {
	data := d.memory()
	if data == nil {
		return bdev.ErrClosed
	}
	return nil
}

// Discard implements bdev.Discarder; the range reads back as zeroes.
func (d *Device) Discard(off, length int64) error { return d.zero("discard", off, length) }

// ZeroesOnDiscard implements bdev.DiscardZeroer: a discarded range reads
// back as zeroes.
func (d *Device) ZeroesOnDiscard() bool { return true }

// WriteZeroes implements bdev.WriteZeroer.
func (d *Device) WriteZeroes(off, length int64) error { return d.zero("write-zeroes", off, length) }

func (d *Device) zero(op string, off, length int64) error {
	if err := bdev.CheckIO(&d.info, op, off, length); err != nil {
		return err
	}
	data := d.memory()
	if data == nil {
		return bdev.ErrClosed
	}
	d.copyBlocks(data, nil, off, length, true)
	return nil
}

// Close implements bdev.Device and frees the memory.
func (d *Device) Close() error {
	d.data.Store(nil)
	return nil
}

// memory returns the device's memory, or nil once closed.
func (d *Device) memory() []byte {
	if p := d.data.Load(); p != nil {
		return *p
	}
	return nil
}
