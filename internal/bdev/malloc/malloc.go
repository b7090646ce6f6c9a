// Package malloc provides a RAM-backed block device, SPDK's malloc bdev.
package malloc

import (
	"fmt"
	"math"
	"math/bits"
	"sync"
	"sync/atomic"

	"github.com/google/uuid"

	"blockcache/internal/bdev"
	"blockcache/internal/excerpt"
	"blockcache/internal/sysmem"
)

// Device is a block device held in memory. Discard zeroes the range.
type Device struct {
	info bdev.Info

	// data is the device's memory, nil after Close. IO loads it once; IO
	// already running when Close swaps it out finishes on the old memory,
	// which the garbage collector frees after it. Each chunk of chunk
	// bytes is copied as one atomic step under its stripe lock, so
	// overlapping IO never tears a block; IO to distinct chunks runs in
	// parallel.
	data atomic.Pointer[[]byte]

	chunk      int64       // bytes a stripe lock covers, see chunkBytes
	chunkShift uint        // log2(chunk) if chunk is a power of two, else 0
	stripe     []chunkLock // a power of two, up to maxStripes
}

// pageBytes is the stride at which New touches the memory it allocates:
// the smallest page size of the platforms Go runs on.
const pageBytes = 4096

// maxStripes is the most stripe locks a device has: 64 KiB of locks, so
// that IO from different CPUs to different chunks rarely shares a lock.
const maxStripes = 1024

// chunkLock guards a chunk, alone on its CPU cache line so that IO to
// neighbouring chunks from different CPUs does not contend on the line.
// Writers hold mu and keep seq odd while they copy; readers read without
// the lock when they can (see readChunk) and take mu shared otherwise.
type chunkLock struct {
	mu  sync.RWMutex
	seq atomic.Uint32
	_   [64 - 28]byte
}

// New returns a zero-filled device of numBlocks blocks of blockSize bytes,
// refusing a size the machine cannot give (see NewChecked).
func New(name string, id uuid.UUID, blockSize uint32, numBlocks uint64) (*Device, error) {
	return NewChecked(name, id, blockSize, numBlocks, sysmem.Probe{})
}

// NewChecked is New with the memory figures read through mem. Before
// allocating it refuses a size that is zero or overflows a byte offset
// (ErrInvalidIO, EINVAL) and one larger than mem says the process can still
// get (a *sysmem.ShortError, ENOMEM), which would otherwise end the process
// with "runtime: out of memory" or get it killed later. The memory is then
// touched page by page, so that the kernel backs it now, as SPDK's pinned
// allocation does, and the next check counts it as used: an allocation left
// untouched would not show in MemAvailable, and device after device would
// pass the check until writes filled them.
func NewChecked(name string, id uuid.UUID, blockSize uint32, numBlocks uint64, mem sysmem.Probe) (*Device, error) {
	if blockSize == 0 || blockSize%bdev.SectorSize != 0 {
		return nil, fmt.Errorf("malloc %s: block size %d is not a multiple of %d: %w", excerpt.Quote(name), blockSize, bdev.SectorSize, bdev.ErrInvalidIO)
	}
	if numBlocks == 0 {
		return nil, fmt.Errorf("malloc %s: zero blocks: %w", excerpt.Quote(name), bdev.ErrInvalidIO)
	}
	if numBlocks > math.MaxInt64/uint64(blockSize) {
		return nil, fmt.Errorf("malloc %s: %d blocks of %d bytes overflow a 64-bit byte size: %w", excerpt.Quote(name), numBlocks, blockSize, bdev.ErrInvalidIO)
	}
	size := int64(blockSize) * int64(numBlocks)
	if err := mem.Check(size); err != nil {
		return nil, fmt.Errorf("malloc %s of %d blocks of %d bytes: %w", excerpt.Quote(name), numBlocks, blockSize, err)
	}
	if id == uuid.Nil {
		id = uuid.New()
	}
	d := &Device{info: bdev.Info{Name: name, UUID: id, ProductName: "Malloc disk", BlockSize: blockSize, NumBlocks: numBlocks,
		Abilities: bdev.Abilities{Discard: true, WriteZeroes: true, ZeroesOnDiscard: true}}}
	data := make([]byte, size)
	for i := 0; i < len(data); i += pageBytes {
		data[i] = 0
	}
	d.data.Store(&data)
	d.chunk = chunkBytes(int64(blockSize))
	if d.chunk&(d.chunk-1) == 0 {
		d.chunkShift = uint(bits.TrailingZeros64(uint64(d.chunk)))
	}
	chunks := (int64(len(data)) + d.chunk - 1) / d.chunk
	d.stripe = make([]chunkLock, min(maxStripes, 1<<bits.Len64(uint64(chunks-1))))
	return d, nil
}

// Info implements bdev.Device.
func (d *Device) Info() bdev.Info { return d.info }

// chunkBytes is the span one stripe lock covers on a device of blocks of bs
// bytes: whole blocks, at least lockSpan bytes, so that no block is ever
// torn, an aligned 4 KiB IO takes one lock, and a 128 KiB one eight rather
// than thirty-two.
func chunkBytes(bs int64) int64 {
	if bs >= lockSpan {
		return bs
	}
	return lockSpan / bs * bs
}

// chunkAt returns the lock of the chunk holding byte pos, and the end of
// that chunk. The common chunk sizes are powers of two, spared a division.
func (d *Device) chunkAt(pos int64) (*chunkLock, int64) {
	var i int64
	if d.chunkShift != 0 {
		i = pos >> d.chunkShift
	} else {
		i = pos / d.chunk
	}
	return &d.stripe[i&int64(len(d.stripe)-1)], (i + 1) * d.chunk
}

// lockSpan is the span of a stripe lock on devices of smaller blocks.
const lockSpan = 16 << 10

// copyBlocks copies n bytes chunk by chunk, each as one atomic step, so
// that concurrent overlapping IO never tears a block. A nil src with
// toDevice zeroes the range.
func (d *Device) copyBlocks(dst, src []byte, off, n int64, toDevice bool) {
	for done := int64(0); done < n; {
		pos := off + done
		l, end := d.chunkAt(pos)
		step := min(end-pos, n-done)
		switch {
		case !toDevice:
			readChunk(l, dst[done:done+step], src[pos:pos+step])
		default:
			l.mu.Lock()
			l.seq.Add(1)
			if src == nil {
				clear(dst[pos : pos+step])
			} else {
				copy(dst[pos:pos+step], src[done:done+step])
			}
			l.seq.Add(1)
			l.mu.Unlock()
		}
		done += step
	}
}

// readChunk copies src, the device's memory within one chunk, to dst.
//
// Where optimisticReads allows, it first copies without the lock, as a
// seqlock reader does: it keeps the copy if seq was even before and is
// unchanged after, that is, if no writer was in the chunk meanwhile. That
// spares a read hit two atomic read-modify-writes, the second of which would
// wait for the copy's stores to drain. A copy that raced a writer may hold
// a mix of both, which is why it is checked and then dropped; Go's memory
// model gives a racy copy of plain bytes exactly that (some mix of the
// writes), nothing worse. If a writer was there, it copies again under the
// lock, so a reader is never starved.
func readChunk(l *chunkLock, dst, src []byte) {
	if optimisticReads {
		if s := l.seq.Load(); s&1 == 0 {
			copy(dst, src)
			if l.seq.Load() == s {
				return
			}
		}
	}
	l.mu.RLock()
	copy(dst, src)
	l.mu.RUnlock()
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

// Immediate implements bdev.Immediate: IO on memory never waits.
func (d *Device) Immediate() {}

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
