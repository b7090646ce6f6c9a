// Package crashdev provides a device that can lose power: a bdev.Device
// wrapper that keeps writes volatile until a Flush (or a FUA write) and can
// produce, with CrashClone, the device a machine would find after a power
// loss at this instant. It is the block-device counterpart of pebble's
// vfs.NewCrashableMem and CrashClone.
//
// # Model
//
// The inner device holds the durable image. A write without FUA (and a
// discard or write-zeroes) is recorded in a volatile overlay, per 512-byte
// sector, as one more version of each sector it covers; reads see the latest
// version at once. Flush applies the latest version of every sector to the
// durable image and empties the overlay. A FUA write goes to the durable
// image directly and drops the overlay versions of its sectors, which can no
// longer come back after a power loss.
//
// A power loss may keep any subset of the unflushed sectors, each at any of
// the versions written to it since the last flush: writes are torn at sector
// granularity, also inside a block larger than 512 bytes, and the device may
// reorder them. CrashClone draws one such outcome.
//
// # Clone, never reset
//
// CrashClone returns a new Device over a fresh RAM copy; the crashed Device
// keeps working, and nothing it does later reaches the clone. A test can so
// leave the crashed engine's goroutines running (a cleaner still writing)
// while it recovers from the clone, the lesson of pebble's move away from a
// strict mode that reset one file system in place.
package crashdev

import (
	"cmp"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"

	"blockcache/internal/bdev"
	"blockcache/internal/bdev/malloc"
)

// sectorIdx numbers the 512-byte sectors of the device.
type sectorIdx int64

// copyChunk bounds the buffer CrashClone copies the durable image through.
const copyChunk = 1 << 20

// Device is a crash-simulating device. All its methods are safe for
// concurrent use. Writes, discards, write-zeroes, Flush, Close and the
// overlay part of CrashClone exclude each other and reads; reads run in
// parallel with each other. A block is therefore never torn by concurrent
// writes, and CrashClone sees a state between two writes.
//
// Discard and WriteZeroes always exist; Info's Abilities are the inner
// device's, and each returns an error wrapping bdev.ErrNotSupported when
// they lack it. Both zero the range (volatile until a flush, like a write),
// but ZeroesOnDiscard promises no more than the inner device did. Clones
// report the same abilities as the original.
//
// Closing a Device leaves the inner device open. CrashClone and Unflushed
// keep working after Close, so a test may stop an engine cleanly and then
// cut the power.
type Device struct {
	info  bdev.Info // fixed; the inner device's at New, abilities included
	inner bdev.Device

	mu struct {
		sync.RWMutex
		// overlay holds, for each sector written since the last Flush and
		// not since by a FUA write, its versions oldest first; a nil
		// version is zeroes. Writers hold mu exclusively.
		overlay map[sectorIdx][][]byte
		// closed is set by Close under mu held exclusively.
		closed bool
	}
}

// New wraps inner, whose current contents become the durable image. The
// Device presents inner's Info unchanged and writes to inner only to make
// data durable (Flush, FUA writes). inner stays owned by the caller.
func New(inner bdev.Device) *Device {
	return newDevice(inner, inner.Info())
}

func newDevice(inner bdev.Device, info bdev.Info) *Device {
	d := &Device{info: info, inner: inner}
	d.mu.overlay = make(map[sectorIdx][][]byte)
	return d
}

// Info implements bdev.Device.
func (d *Device) Info() bdev.Info { return d.info }

// ReadAt implements bdev.Device: the durable image with the latest overlay
// version of each sector on top.
func (d *Device) ReadAt(p []byte, off int64) error {
	if err := bdev.CheckIO(&d.info, "read", off, int64(len(p))); err != nil {
		return err
	}
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.mu.closed {
		return d.closedErr("read", off, int64(len(p)))
	}
	if err := d.inner.ReadAt(p, off); err != nil {
		return err
	}
	if len(d.mu.overlay) == 0 {
		return nil
	}
	first := sectorIdx(off / bdev.SectorSize)
	for i := range sectorIdx(len(p) / bdev.SectorSize) {
		vs, ok := d.mu.overlay[first+i]
		if !ok {
			continue
		}
		dst := p[i*bdev.SectorSize : (i+1)*bdev.SectorSize]
		if v := vs[len(vs)-1]; v == nil {
			clear(dst)
		} else {
			copy(dst, v)
		}
	}
	return nil
}

// WriteAt implements bdev.Device. Without fua the data is only recorded in
// the overlay; with fua it is written to the inner device with fua, and the
// overlay forgets the sectors it covers.
func (d *Device) WriteAt(p []byte, off int64, fua bool) error {
	if err := bdev.CheckIO(&d.info, "write", off, int64(len(p))); err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.mu.closed {
		return d.closedErr("write", off, int64(len(p)))
	}
	if fua {
		if err := d.inner.WriteAt(p, off, true); err != nil {
			return err
		}
		first := sectorIdx(off / bdev.SectorSize)
		for i := range sectorIdx(len(p) / bdev.SectorSize) {
			delete(d.mu.overlay, first+i)
		}
		return nil
	}
	d.record(off, int64(len(p)), append([]byte(nil), p...))
	return nil
}

// record appends a version to each sector of [off, off+length): the
// matching 512 bytes of data, or nil (zeroes) when data is nil. Callers hold
// mu exclusively.
func (d *Device) record(off, length int64, data []byte) {
	first := sectorIdx(off / bdev.SectorSize)
	for i := range sectorIdx(length / bdev.SectorSize) {
		var v []byte
		if data != nil {
			v = data[i*bdev.SectorSize : (i+1)*bdev.SectorSize : (i+1)*bdev.SectorSize]
		}
		d.mu.overlay[first+i] = append(d.mu.overlay[first+i], v)
	}
}

// Flush implements bdev.Device: it applies the latest version of every
// overlay sector to the inner device, flushes the inner device, and empties
// the overlay. On error the overlay is kept whole.
func (d *Device) Flush() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.mu.closed {
		return d.closedErr("flush", 0, 0)
	}
	latest := func(_ sectorIdx, vs [][]byte) ([]byte, bool) { return vs[len(vs)-1], true }
	if err := applyOverlay(d.inner, d.mu.overlay, latest); err != nil {
		return err
	}
	if err := d.inner.Flush(); err != nil {
		return err
	}
	clear(d.mu.overlay)
	return nil
}

// Discard implements bdev.Discarder: the range reads back as zeroes, durably
// after the next flush.
func (d *Device) Discard(off, length int64) error {
	return d.zero("discard", d.info.Abilities.Discard, off, length)
}

// WriteZeroes implements bdev.WriteZeroer: the range reads back as zeroes,
// durably after the next flush.
func (d *Device) WriteZeroes(off, length int64) error {
	return d.zero("write-zeroes", d.info.Abilities.WriteZeroes, off, length)
}

func (d *Device) zero(op string, supported bool, off, length int64) error {
	if err := bdev.CheckIO(&d.info, op, off, length); err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.mu.closed {
		return d.closedErr(op, off, length)
	}
	if !supported {
		return &bdev.IOError{Op: op, Dev: d.info.Name, Offset: off, Len: length, Err: bdev.ErrNotSupported}
	}
	d.record(off, length, nil)
	return nil
}

// Close implements bdev.Device. It waits for calls in progress and leaves
// the inner device open; the overlay is kept for CrashClone.
func (d *Device) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.mu.closed = true
	return nil
}

// Unflushed returns the number of sectors with versions not yet durable.
func (d *Device) Unflushed() int {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return len(d.mu.overlay)
}

// CrashCloneConfig says which unflushed data survives a CrashClone.
type CrashCloneConfig struct {
	// UnflushedPercent (0 to 100) is the chance that a sector with unflushed
	// versions keeps one of them rather than its durable contents. 0 keeps
	// exactly the durable image.
	UnflushedPercent int
	// RNG draws which sectors survive and at which version, in ascending
	// sector order, so one seed gives one outcome. Required unless
	// UnflushedPercent is 0.
	RNG *rand.Rand
}

// CrashClone returns the device found after a power loss now: a new Device,
// over a new RAM device with the same Info, holding the durable image plus,
// for each sector with unflushed versions and with probability
// UnflushedPercent/100, one of those versions chosen uniformly. The clone
// has an empty overlay and the original's abilities; d is unchanged and
// keeps working, and neither device's later writes reach the other.
//
// CrashClone works after Close. Writes to d wait while it runs.
func (d *Device) CrashClone(cfg CrashCloneConfig) (*Device, error) {
	if cfg.UnflushedPercent < 0 || cfg.UnflushedPercent > 100 {
		return nil, fmt.Errorf("crashdev %s: clone: UnflushedPercent %d not in [0, 100]", d.info.Name, cfg.UnflushedPercent)
	}
	if cfg.RNG == nil && cfg.UnflushedPercent > 0 {
		return nil, fmt.Errorf("crashdev %s: clone: UnflushedPercent %d needs an RNG", d.info.Name, cfg.UnflushedPercent)
	}
	mem, err := malloc.New(d.info.Name, d.info.UUID, d.info.BlockSize, d.info.NumBlocks)
	if err != nil {
		return nil, fmt.Errorf("crashdev %s: clone: %w", d.info.Name, err)
	}
	d.mu.RLock()
	defer d.mu.RUnlock()
	if err := copyDevice(mem, d.inner, d.info); err != nil {
		return nil, fmt.Errorf("crashdev %s: clone: %w", d.info.Name, err)
	}
	survivor := func(_ sectorIdx, vs [][]byte) ([]byte, bool) {
		if cfg.UnflushedPercent == 0 || cfg.RNG.IntN(100) >= cfg.UnflushedPercent {
			return nil, false
		}
		return vs[cfg.RNG.IntN(len(vs))], true
	}
	if err := applyOverlay(mem, d.mu.overlay, survivor); err != nil {
		return nil, fmt.Errorf("crashdev %s: clone: %w", d.info.Name, err)
	}
	return newDevice(mem, d.info), nil
}

// copyDevice copies the whole of src to dst, both of the size info gives.
func copyDevice(dst, src bdev.Device, info bdev.Info) error {
	size := info.SizeBytes()
	buf := make([]byte, min(size, max(copyChunk/int64(info.BlockSize), 1)*int64(info.BlockSize)))
	for off := int64(0); off < size; off += int64(len(buf)) {
		p := buf[:min(int64(len(buf)), size-off)]
		if err := src.ReadAt(p, off); err != nil {
			return err
		}
		if err := dst.WriteAt(p, off, false); err != nil {
			return err
		}
	}
	return nil
}

// applyOverlay writes to dev, for each overlay sector in ascending order, the
// version choose picks (nil is zeroes), if it picks one. It writes whole
// blocks of dev: each run of consecutive overlay sectors is widened to block
// boundaries, read, patched and written back.
func applyOverlay(dev bdev.Device, overlay map[sectorIdx][][]byte, choose func(sectorIdx, [][]byte) ([]byte, bool)) error {
	sectorsPerBlock := sectorIdx(dev.Info().BlockSize / bdev.SectorSize)
	sectors := slices.SortedFunc(maps.Keys(overlay), cmp.Compare[sectorIdx])
	var buf []byte
	for len(sectors) > 0 {
		run := 1
		for run < len(sectors) && sectors[run] == sectors[0]+sectorIdx(run) {
			run++
		}
		start := sectors[0] / sectorsPerBlock * sectorsPerBlock
		end := (sectors[run-1] + sectorsPerBlock) / sectorsPerBlock * sectorsPerBlock
		buf = slices.Grow(buf[:0], int(end-start)*bdev.SectorSize)[:int(end-start)*bdev.SectorSize]
		off := int64(start) * bdev.SectorSize
		if err := dev.ReadAt(buf, off); err != nil {
			return err
		}
		changed := false
		for _, s := range sectors[:run] {
			v, ok := choose(s, overlay[s])
			if !ok {
				continue
			}
			dst := buf[int(s-start)*bdev.SectorSize:][:bdev.SectorSize]
			if v == nil {
				clear(dst)
			} else {
				copy(dst, v)
			}
			changed = true
		}
		if changed {
			if err := dev.WriteAt(buf, off, false); err != nil {
				return err
			}
		}
		sectors = sectors[run:]
	}
	return nil
}

func (d *Device) closedErr(op string, off, length int64) error {
	return &bdev.IOError{Op: op, Dev: d.info.Name, Offset: off, Len: length, Err: bdev.ErrClosed}
}
