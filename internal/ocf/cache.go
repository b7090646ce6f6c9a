package ocf

import (
	"fmt"
	"sync"
	"sync/atomic"

	"blockcache/internal/bdev"
)

// Config configures a cache instance.
type Config struct {
	// LineSize is the cache line size in bytes; 0 means DefaultLineSize.
	LineSize int64
	// Mode is the initial cache mode.
	Mode Mode
	// Promotion decides which misses are inserted; nil means PromoteAlways.
	Promotion PromotionPolicy
	// SeqCutoff decides which requests bypass the cache; nil means CutoffNever.
	SeqCutoff SeqCutoff
}

// Cache is a cache instance: one cache device shared by one or more cores.
//
// IO goes through a Core and may be issued from any number of goroutines.
// Data-path exclusion is per core line (see stripes); Cache.mu guards only
// metadata and is never held across device IO. Management operations
// (AddCore, RemoveCore, SetMode, FlushDirty) are serialised by mgmt.
type Cache struct {
	dev    bdev.Device
	layout layout
	// sectorsPerLine is lineSize / 512.
	sectorsPerLine int

	mode      atomic.Uint32 // a Mode
	promotion PromotionPolicy
	cutoff    SeqCutoff

	stripes stripes
	scratch sync.Pool // *requestScratch, for requests of many lines
	bufPool sync.Pool // *[]byte of lineSize bytes, for cleaning

	mgmt sync.Mutex // serialises management operations

	mu struct {
		sync.Mutex
		lines   []line // indexed by lineIdx
		mapping mapping
		lists   lists
		cores   map[CoreID]*Core
		stopped bool
	}
}

// New creates a cache on dev with empty, in-memory metadata.
func New(dev bdev.Device, cfg Config) (*Cache, error) {
	info := dev.Info()
	if info.BlockSize != sectorSize {
		return nil, fmt.Errorf("cache device %q: block size %d: %w (the cache device must have 512-byte blocks)", info.Name, info.BlockSize, ErrInvalidConfig)
	}
	if cfg.LineSize == 0 {
		cfg.LineSize = DefaultLineSize
	}
	if cfg.Mode >= numModes {
		return nil, fmt.Errorf("cache mode %d: %w", cfg.Mode, ErrInvalidConfig)
	}
	lay, err := computeLayout(info.SizeBytes(), cfg.LineSize)
	if err != nil {
		return nil, fmt.Errorf("cache device %q: %w", info.Name, err)
	}
	c := &Cache{
		dev:            dev,
		layout:         lay,
		sectorsPerLine: int(cfg.LineSize / sectorSize),
		promotion:      cfg.Promotion,
		cutoff:         cfg.SeqCutoff,
		stripes:        newStripes(lay.numLines),
	}
	if c.promotion == nil {
		c.promotion = PromoteAlways{}
	}
	if c.cutoff == nil {
		c.cutoff = CutoffNever{}
	}
	c.mode.Store(uint32(cfg.Mode))
	c.scratch.New = func() any { return new(requestScratch) }
	c.bufPool.New = func() any { b := make([]byte, cfg.LineSize); return &b }

	c.mu.lines = make([]line, lay.numLines)
	c.mu.mapping = newMapping(lay.numLines)
	c.mu.lists.init()
	c.mu.cores = make(map[CoreID]*Core)
	for i := lay.numLines - 1; i >= 0; i-- {
		c.mu.lines[i].hashNext = noLine
		c.mu.lists.pushFront(c.mu.lines, listFree, lineIdx(i))
	}
	return c, nil
}

// Device returns the cache device.
func (c *Cache) Device() bdev.Device { return c.dev }

// LineSize returns the cache line size in bytes.
func (c *Cache) LineSize() int64 { return c.layout.lineSize }

// NumLines returns the number of cache lines the device holds.
func (c *Cache) NumLines() int { return c.layout.numLines }

// Mode returns the current cache mode.
func (c *Cache) Mode() Mode { return Mode(c.mode.Load()) }

// SetMode changes the cache mode at run time. Dirty data is never lost: with
// flushFirst, dirty lines are written back before the change when the new mode
// does not write back; otherwise they stay dirty (and are read from the cache)
// until cleaned.
func (c *Cache) SetMode(m Mode, flushFirst bool) error {
	if m >= numModes {
		return fmt.Errorf("set cache mode %d: %w", m, ErrInvalidConfig)
	}
	if flushFirst && !m.writesBack() {
		if err := c.FlushDirty(nil, nil); err != nil {
			return fmt.Errorf("set cache mode %s: %w", m, err)
		}
	}
	c.mode.Store(uint32(m))
	return nil
}

// CoreConfig describes a core to add to a cache.
type CoreConfig struct {
	// ID is the core's id within the cache; it must be unused.
	ID CoreID
	// Device is the backing (slow) device.
	Device bdev.Device
	// Volume describes the exported volume; BlockSize and NumBlocks are taken
	// from Device, the rest (name, UUID, product) from here.
	Volume bdev.Info
}

// AddCore attaches a core to the cache and returns its volume.
func (c *Cache) AddCore(cfg CoreConfig) (*Core, error) {
	c.mgmt.Lock()
	defer c.mgmt.Unlock()
	info := cfg.Device.Info()
	if cfg.ID >= MaxCores {
		return nil, fmt.Errorf("add core %q: id %d out of range 0..%d: %w", info.Name, cfg.ID, MaxCores-1, ErrInvalidConfig)
	}
	if info.BlockSize%sectorSize != 0 {
		return nil, fmt.Errorf("add core %q: block size %d not a multiple of %d: %w", info.Name, info.BlockSize, sectorSize, ErrInvalidConfig)
	}
	if lines := (info.SizeBytes() + c.layout.lineSize - 1) / c.layout.lineSize; lines > 1<<32-1 {
		return nil, fmt.Errorf("add core %q: %d bytes is more than 2^32 cache lines: %w", info.Name, info.SizeBytes(), ErrInvalidConfig)
	}
	vol := cfg.Volume
	vol.BlockSize, vol.NumBlocks = info.BlockSize, info.NumBlocks
	co := &Core{cache: c, id: cfg.ID, dev: cfg.Device, info: vol}

	c.mu.Lock()
	defer c.mu.Unlock()
	if c.mu.stopped {
		return nil, fmt.Errorf("add core %q: %w", info.Name, ErrStopped)
	}
	if _, ok := c.mu.cores[cfg.ID]; ok {
		return nil, fmt.Errorf("add core %q: id %d: %w", info.Name, cfg.ID, ErrCoreExists)
	}
	for _, o := range c.mu.cores {
		if o.dev == cfg.Device {
			return nil, fmt.Errorf("add core %q: device already a core of this cache: %w", info.Name, ErrCoreExists)
		}
	}
	c.mu.cores[cfg.ID] = co
	return co, nil
}

// RemoveCore detaches a core. In-flight IO on it finishes first; later IO
// fails with ErrStopped. With flush, its dirty data is written back to the
// core device first (the permanent, clean removal of bdev_ocf_delete); the
// core's lines are then dropped from the cache either way.
func (c *Cache) RemoveCore(co *Core, flush bool) error {
	c.mgmt.Lock()
	defer c.mgmt.Unlock()
	if co.state.Load()&stateRemoved != 0 {
		return fmt.Errorf("remove core %q: %w", co.info.Name, ErrNoSuchCore)
	}
	co.state.Or(stateRemoved)
	c.drain()
	if flush {
		if err := c.flushDirty(co, nil); err != nil {
			co.state.And(^uint32(stateRemoved)) // the core stays, with its data
			return fmt.Errorf("remove core %q: %w", co.info.Name, err)
		}
	}
	c.stripes.lockAll()
	defer c.stripes.unlockAll()
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := range c.mu.lines {
		if ln := &c.mu.lines[i]; ln.mapped() && ln.core == co.id {
			c.unmapLocked(lineIdx(i))
		}
	}
	delete(c.mu.cores, co.id)
	return nil
}

// drain waits until every IO holding stripes has let go of them: IO admitted
// before a core's state changed has finished.
func (c *Cache) drain() {
	c.stripes.lockAll()
	c.stripes.unlockAll()
}

// Cores returns the attached cores in id order.
func (c *Cache) Cores() []*Core {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]*Core, 0, len(c.mu.cores))
	for id := CoreID(0); len(out) < len(c.mu.cores); id++ {
		if co, ok := c.mu.cores[id]; ok {
			out = append(out, co)
		}
	}
	return out
}

// occupancyPctLocked is the share of lines in use, 0..100.
func (c *Cache) occupancyPctLocked() int {
	return 100 * (c.layout.numLines - c.mu.lists[listFree].n) / c.layout.numLines
}

// allocLocked maps a line for (core, coreLine), taking a free line or
// evicting the least recently used clean line that no request is using (its
// stripe can be locked). The new line is empty and at the head of the clean
// list. It returns noLine when every line is dirty or in use.
func (c *Cache) allocLocked(co *Core, coreLine uint32) lineIdx {
	lines := c.mu.lines
	i := c.mu.lists[listFree].head
	if i == noLine {
		for j := c.mu.lists[listClean].tail; j != noLine; j = lines[j].prev {
			s := c.stripes.index(lines[j].core, uint64(lines[j].coreLine))
			if c.stripes.locks[s].TryLock() {
				c.unmapLocked(j)
				c.stripes.locks[s].Unlock()
				i = j
				break
			}
		}
		if i == noLine {
			return noLine
		}
	}
	c.mu.lists.remove(lines, i)
	ln := &lines[i]
	ln.core, ln.coreLine = co.id, coreLine
	ln.valid, ln.dirty = sectorMask{}, sectorMask{}
	c.mu.mapping.insert(lines, i)
	c.mu.lists.pushFront(lines, listClean, i)
	co.occupied++
	return i
}

// unmapLocked drops line i's mapping and puts it on the free list. The
// caller holds the stripe of the line's core line exclusively, or knows no
// one else can (eviction's TryLock, RemoveCore's lock on every stripe).
func (c *Cache) unmapLocked(i lineIdx) {
	ln := &c.mu.lines[i]
	co := c.mu.cores[ln.core]
	co.occupied--
	if ln.list == listDirty {
		co.dirtyLines--
	}
	c.mu.mapping.remove(c.mu.lines, i)
	c.mu.lists.remove(c.mu.lines, i)
	ln.valid, ln.dirty = sectorMask{}, sectorMask{}
	c.mu.lists.pushFront(c.mu.lines, listFree, i)
}

// setMasksLocked updates line i's masks, moving it between the clean and
// dirty lists as needed and to the head of its list. The caller holds the
// line's stripe exclusively, or only adds valid bits.
func (c *Cache) setMasksLocked(i lineIdx, valid, dirty sectorMask) {
	ln := &c.mu.lines[i]
	co := c.mu.cores[ln.core]
	ln.valid, ln.dirty = valid, dirty
	want := listClean
	if !dirty.empty() {
		want = listDirty
	}
	if ln.list != want {
		if want == listDirty {
			co.dirtyLines++
		} else {
			co.dirtyLines--
		}
	}
	c.mu.lists.moveToFront(c.mu.lines, want, i)
}

// dropEmptyLocked unmaps line i if it holds nothing. The caller holds its
// stripe exclusively.
func (c *Cache) dropEmptyLocked(i lineIdx) {
	if c.mu.lines[i].valid.empty() {
		c.unmapLocked(i)
	}
}

// dirtyLines returns the number of lines holding dirty data.
func (c *Cache) dirtyLines() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.mu.lists[listDirty].n
}

// Stop stops a cache whose cores were all removed: the cache device is
// flushed and no core can be added any more.
func (c *Cache) Stop() error {
	c.mgmt.Lock()
	defer c.mgmt.Unlock()
	c.mu.Lock()
	n := len(c.mu.cores)
	c.mu.stopped = n == 0
	c.mu.Unlock()
	if n > 0 {
		return fmt.Errorf("stop cache on %q: %d cores still attached: %w", c.dev.Info().Name, n, ErrCoreExists)
	}
	if err := c.dev.Flush(); err != nil {
		return fmt.Errorf("stop cache on %q: flush: %w", c.dev.Info().Name, err)
	}
	return nil
}
