package ocf

import (
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"blockcache/internal/bdev"
	"blockcache/internal/ocf/metadata"
	"blockcache/internal/sysmem"
)

// Config configures a cache instance.
type Config struct {
	// LineSize is the cache line size in bytes; 0 means DefaultLineSize.
	LineSize int64
	// Mode is the initial cache mode.
	Mode Mode
	// Promotion, if set, replaces the built-in promotion policies (tests);
	// otherwise PromotionParams chooses one.
	Promotion PromotionPolicy
	// PromotionParams chooses the built-in promotion policy; nil means
	// DefaultPromotionParams.
	PromotionParams *PromotionParams
	// SeqCutoff decides which requests bypass the cache; nil means CutoffNever.
	SeqCutoff SeqCutoff
	// VolatileMetadata keeps the metadata in memory only (SPDK's
	// metadata_volatile): nothing is written to the cache device's metadata
	// area, and the cache cannot be loaded after a stop.
	VolatileMetadata bool
	// VolatileDirtyMetadata keeps changes of dirty state in memory until a
	// volume flush or FUA write, as a disk's volatile write cache: a write
	// that makes sectors dirty returns without writing the entry that
	// records it, so a crash (of the process too) loses the writes since
	// the last flush. Otherwise (the default, OCF's rule) such a write
	// returns only once that entry is on the cache device. Recorded in the
	// superblock; Load takes it from there.
	VolatileDirtyMetadata bool
	// Progress, if set, is told how far long operations ("init", "load",
	// "flush") are, in their own units.
	Progress func(op string, done, total int64)
	// Cleaning chooses the background cleaning policy; the zero value means
	// DefaultCleaningParams.
	Cleaning *CleaningParams
	// Clock gives the cleaning policies the time; nil means SystemClock.
	Clock Clock
	// Memory tells how much memory the process can still get, which the
	// cache's metadata must fit in (see MemoryNeeded); the zero value reads
	// the real /proc and /sys.
	Memory sysmem.Probe
}

// Cache is a cache instance: one cache device shared by one or more cores.
//
// IO goes through a Core and may be issued from any number of goroutines.
// Data-path exclusion is per core line (see stripes); Cache.mu guards only
// metadata and is never held across device IO. Management operations
// (AddCore, RemoveCore, FlushDirty, Stop) are serialised by mgmt; changes of
// the settings the superblock records (SetMode and the other setters) by
// settings.
type Cache struct {
	// Immutable after New or Load returns.
	dev    bdev.Device
	layout layout
	// sectorsPerLine is lineSize / 512.
	sectorsPerLine int
	// cutoff, when set (Config.SeqCutoff), replaces the per-core sequential
	// cutoff; defaultSeqCutoff is what new cores start with.
	cutoff           SeqCutoff
	defaultSeqCutoff SeqCutoffParams
	clock            Clock
	epoch            time.Time // the zero of line.dirtySince
	stripes          stripes   // the locks themselves; see stripes for their use

	// Safe for concurrent use on their own: atomics, pools, and state with
	// a lock of its own (prom.mu; cleaner.mu and cleaner.step; meta.sync,
	// see persistState for which of its fields Cache.mu guards instead).
	mode    atomic.Uint32 // a Mode
	prom    promotionHolder
	scratch sync.Pool // *requestScratch, for requests of many lines
	bufPool sync.Pool // *[]byte of lineSize bytes, for cleaning
	meta    persistState
	cleaner cleanerState
	// fallback's counters are atomics: the data path counts errors
	// without a lock.
	fallback struct {
		threshold atomic.Uint32 // 0: off
		errors    atomic.Uint64 // cache errors since the threshold was set
		active    atomic.Bool
	}

	mgmt sync.Mutex // serialises management operations
	// settings serialises the changes of what the superblock records: each
	// holds it from the change through the superblock write to the
	// change's undoing when the write fails (changeRecorded), so no write
	// records a change that is then undone. Taken after mgmt, before
	// meta.sync and mu. Flushes do not take it: a setting never waits for
	// one.
	settings sync.Mutex

	mu struct {
		sync.Mutex

		// lines and mapping are written under mu only, and read
		// lock-free: by the hit path (hit.go), and by lookups holding the
		// stripe of the core line they look for (mapping.lookup). The
		// slices and the bucket array never change after newCache; what
		// the lock-free readers load (line.key, line.valid, line.hashNext,
		// the bucket heads) are atomics, and the key and valid mask of a
		// mapped line change only with its stripe held exclusively, so a
		// read under the stripe, or one the stripe's sequence count
		// vouches for, sees a consistent line. See the line type for each
		// field.
		lines   []line // indexed by lineIdx
		mapping mapping

		// The rest is guarded by mu.
		lists lists
		// cores holds attached cores and, after Load, the detached cores
		// the metadata records (state has stateRemoved until AddCore).
		cores   map[CoreID]*Core
		stopped bool
		// metaDirty has a bit per entry sector changed since it was last
		// written; metaUrgent is set when one of the changes must be
		// written by the next flush (see persist.go).
		metaDirty  []uint64
		metaUrgent bool
		// metaSyncing is set while a sync writes urgent changes it took:
		// they are not durable yet, though metaUrgent no longer says so.
		metaSyncing bool
		// chunkDirty counts dirty lines per acp chunk (core<<32 | chunk).
		chunkDirty map[uint64]int32
	}
}

// New creates a cache on dev, initialising its metadata: whatever the
// device held is forgotten.
func New(dev bdev.Device, cfg Config) (*Cache, error) {
	c, err := newCache(dev, cfg)
	if err != nil {
		return nil, err
	}
	c.meta.id = uuid.New()
	if err := c.initMetadata(); err != nil {
		return nil, onDevice("initialise cache metadata", dev, err)
	}
	return c, nil
}

// newCache builds an empty cache on dev without touching the device. Its
// errors name dev.
func newCache(dev bdev.Device, cfg Config) (*Cache, error) {
	info := dev.Info()
	if info.BlockSize != sectorSize {
		return nil, fmt.Errorf("cache device %q: block size %d: %w (the cache device must have 512-byte blocks)", info.Name, info.BlockSize, ErrInvalidConfig)
	}
	if cfg.LineSize == 0 {
		cfg.LineSize = DefaultLineSize
	}
	if cfg.Mode >= numModes {
		return nil, fmt.Errorf("cache device %q: cache mode %d: %w", info.Name, cfg.Mode, ErrInvalidConfig)
	}
	lay, err := computeLayout(info.SizeBytes(), cfg.LineSize)
	if err != nil {
		return nil, fmt.Errorf("cache device %q: %w", info.Name, err)
	}
	if err := checkMemory(cfg.Memory, info.SizeBytes(), cfg.LineSize); err != nil {
		return nil, fmt.Errorf("cache device %q: %w", info.Name, err)
	}
	c := &Cache{
		dev:            dev,
		layout:         lay,
		sectorsPerLine: int(cfg.LineSize / sectorSize),
		cutoff:         cfg.SeqCutoff,
		stripes:        newStripes(lay.numLines),
		meta:           persistState{volatile: cfg.VolatileMetadata, volatileDirty: cfg.VolatileDirtyMetadata, progress: cfg.Progress},
	}
	pp := DefaultPromotionParams()
	if cfg.PromotionParams != nil {
		pp = *cfg.PromotionParams
	}
	pol, err := c.newPromotionPolicy(pp)
	if err != nil {
		return nil, fmt.Errorf("cache device %q: %w", info.Name, err)
	}
	c.prom.params, c.prom.policy = pp, cfg.Promotion
	if c.prom.policy == nil {
		c.prom.policy = pol
	}
	c.defaultSeqCutoff = DefaultSeqCutoffParams()
	c.mode.Store(uint32(cfg.Mode))
	c.clock = cfg.Clock
	if c.clock == nil {
		c.clock = SystemClock{}
	}
	c.epoch = c.clock.Now()
	c.cleaner.params = DefaultCleaningParams()
	if cfg.Cleaning != nil {
		if err := cfg.Cleaning.Validate(); err != nil {
			return nil, fmt.Errorf("cache device %q: %w", info.Name, err)
		}
		c.cleaner.params = *cfg.Cleaning
	}
	c.cleaner.wake = make(chan struct{}, 1)
	c.scratch.New = func() any { return new(requestScratch) }
	c.bufPool.New = func() any { b := make([]byte, cfg.LineSize); return &b }
	c.meta.init(lay.EntrySectors)

	c.mu.lines = make([]line, lay.numLines)
	c.mu.mapping = newMapping(lay.numLines)
	c.mu.lists.init()
	c.mu.cores = make(map[CoreID]*Core)
	c.mu.metaDirty = make([]uint64, (lay.EntrySectors+63)/64)
	c.mu.chunkDirty = make(map[uint64]int32)
	for i := lay.numLines - 1; i >= 0; i-- {
		c.mu.lines[i].hashNext.Store(int32(noLine))
		c.mu.lists.pushFront(c.mu.lines, listFree, lineIdx(i))
	}
	return c, nil
}

// ID returns the cache's identity, recorded in its metadata.
func (c *Cache) ID() uuid.UUID { return c.meta.id }

// VolatileMetadata reports whether the metadata is kept in memory only.
func (c *Cache) VolatileMetadata() bool { return c.meta.volatile }

// VolatileDirtyMetadata reports whether changes of dirty state wait for a
// flush or FUA write to reach the metadata (Config.VolatileDirtyMetadata).
func (c *Cache) VolatileDirtyMetadata() bool { return c.meta.volatileDirty }

// Device returns the cache device.
func (c *Cache) Device() bdev.Device { return c.dev }

// LineSize returns the cache line size in bytes.
func (c *Cache) LineSize() int64 { return c.layout.lineSize }

// NumLines returns the number of cache lines the device holds.
func (c *Cache) NumLines() int { return c.layout.numLines }

// Mode returns the current cache mode.
func (c *Cache) Mode() Mode { return Mode(c.mode.Load()) }

// SetMode changes the cache mode at run time and records it in the metadata.
// Dirty data is never lost: with flushFirst, dirty lines are written back
// before the change when the new mode does not write back; otherwise they
// stay dirty (and are read from the cache) until cleaned. If the metadata
// cannot be written, the old mode is put back and the error returned; a
// flush done first is not undone (its lines are clean, nothing else).
//
// Requests read the mode once, lock-free, as they start, so one that
// started in the new mode may still run in it after the old mode is back.
// That is safe for the same reason a switch needs no drain: each mode keeps
// the cache and the core coherent whatever mode the requests before it ran
// in (a write-back write leaves dirty lines, which every mode reads from the
// cache and the cleaner writes back, as after leaving wb). The mode is all
// that changes: the cleaner runs in every mode.
func (c *Cache) SetMode(m Mode, flushFirst bool) error {
	if m >= numModes {
		return fmt.Errorf("set cache mode %d: %w", m, ErrInvalidConfig)
	}
	if flushFirst && !m.writesBack() {
		if err := c.FlushDirty(nil, nil); err != nil {
			return fmt.Errorf("set cache mode %s: %w", m, err)
		}
	}
	var old Mode
	err := c.changeRecorded(
		func() { old = Mode(c.mode.Swap(uint32(m))) },
		func() { c.mode.Store(uint32(old)) })
	if err != nil {
		return fmt.Errorf("set cache mode %s: %w", m, err)
	}
	return nil
}

// CoreConfig describes a core to add to a cache.
type CoreConfig struct {
	// ID is the core's id within the cache: unused, or the id of a core the
	// loaded metadata records (which attaches the device to its data).
	ID CoreID
	// Device is the backing (slow) device.
	Device bdev.Device
	// Volume describes the exported volume; BlockSize, NumBlocks and
	// Abilities follow from Device, the rest (name, UUID, product) is taken
	// from here.
	Volume bdev.Info
}

// AddCore attaches a core to the cache and returns its volume. The core is
// recorded in the metadata before AddCore returns. When the superblock
// write fails the cache is left as it was, in memory and on the device: a
// new core is not in it, a recorded one stays detached with its data.
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
	vol.Abilities = volumeAbilities(info.Abilities)
	record := metadata.CoreRecord{ID: uint16(cfg.ID), SizeBytes: uint64(info.SizeBytes()), VolumeUUID: vol.UUID, CoreName: info.Name, VolumeName: vol.Name,
		Identity: bdev.IdentityOf(cfg.Device)}

	c.settings.Lock() // the record's change, its superblock write and undoing
	defer c.settings.Unlock()
	sbSeq := c.superblockSeq()
	c.mu.Lock()
	if c.mu.stopped {
		c.mu.Unlock()
		return nil, fmt.Errorf("add core %q: %w", info.Name, ErrStopped)
	}
	for _, o := range c.mu.cores {
		if o.dev == cfg.Device {
			c.mu.Unlock()
			return nil, fmt.Errorf("add core %q: device already a core of this cache: %w", info.Name, ErrCoreExists)
		}
	}
	co := c.mu.cores[cfg.ID]
	fresh := co == nil
	switch {
	case fresh:
		co = &Core{cache: c, id: cfg.ID, stats: newCounters()}
		c.mu.cores[cfg.ID] = co
	case co.dev != nil || co.state.Load()&stateRemoved == 0:
		c.mu.Unlock()
		return nil, fmt.Errorf("add core %q: id %d: %w", info.Name, cfg.ID, ErrCoreExists)
	case co.record.SizeBytes != record.SizeBytes:
		c.mu.Unlock()
		return nil, fmt.Errorf("add core %q: its size %d differs from the %d bytes the cache recorded for core %d (%q): %w",
			info.Name, record.SizeBytes, co.record.SizeBytes, cfg.ID, co.record.CoreName, ErrInvalidConfig)
	}
	seq := c.defaultSeqCutoff
	if co.dev == nil && co.record.CoreName != "" {
		// Re-attaching a recorded core: it keeps its sequential cutoff.
		if p, err := recordedSeqCutoff(co.record); err == nil {
			seq = p
		}
	}
	record.SeqCutoff, record.SeqThreshold, record.SeqPromotionCount = uint8(seq.Policy), recordThreshold(seq.ThresholdBytes), seq.PromotionCount
	oldInfo, oldRecord, oldSeq, oldImmediate := co.info, co.record, co.seq, co.immediate.Load()
	co.dev, co.info, co.record = cfg.Device, vol, record
	co.seq = newSeqDetector(seq)
	co.immediate.Store(bdev.IsImmediate(cfg.Device) && bdev.IsImmediate(c.dev))
	co.state.Store(0)
	c.mu.Unlock()
	err := c.recordOrUndo(sbSeq, func() {
		// Back as before: a new core leaves the table (it has no lines:
		// nothing could reach it), a recorded one is detached again with
		// its lines and record. The drains are RemoveCore's: IO that found
		// the core through Cores, then a cleaning batch holding its device.
		co.state.Store(stateRemoved)
		c.drain()
		c.mu.Lock()
		if fresh {
			delete(c.mu.cores, cfg.ID)
		}
		co.dev, co.info, co.record, co.seq = nil, oldInfo, oldRecord, oldSeq
		co.immediate.Store(oldImmediate)
		c.mu.Unlock()
		c.drain()
	})
	if err != nil {
		return nil, fmt.Errorf("add core %q: %w", info.Name, err)
	}
	return co, nil
}

// Detached returns the cores the metadata records that have no device
// attached (after Load, or after RemoveCore without flush).
func (c *Cache) Detached() []metadata.CoreRecord {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []metadata.CoreRecord
	for _, co := range c.mu.cores {
		if co.dev == nil {
			out = append(out, co.record)
		}
	}
	slices.SortFunc(out, func(a, b metadata.CoreRecord) int { return int(a.ID) - int(b.ID) })
	return out
}

// RemoveCore takes a core out of service. In-flight IO on it finishes
// first; later IO fails with ErrStopped.
//
// With flush (bdev_ocf_delete's permanent removal) its dirty data is
// written back to the core device first, then its lines and its record are
// dropped. Without flush (shutdown, hot-remove) the core is only detached:
// its lines and record stay, in memory and on the cache device, so AddCore
// with the same id, or a later Load, brings its data back. When it fails the
// core stays attached and serving (after a failed metadata write, without
// lines: its data was written back).
func (c *Cache) RemoveCore(co *Core, flush bool) error {
	c.mgmt.Lock()
	defer c.mgmt.Unlock()
	if co.state.Load()&stateRemoved != 0 {
		return fmt.Errorf("remove core %q: %w", co.record.CoreName, ErrNoSuchCore)
	}
	co.state.Or(stateRemoved)
	c.drain()
	if !flush {
		c.mu.Lock()
		co.dev = nil
		c.mu.Unlock()
		// A cleaning batch that locked its stripes after the drain above
		// may hold the device it read before it was cleared: wait for it,
		// so that nothing writes to the device once this returns.
		c.drain()
		return nil
	}
	if err := c.flushDirty(co, nil); err != nil {
		co.state.And(^uint32(stateRemoved)) // the core stays, with its data
		return fmt.Errorf("remove core %q: %w", co.record.CoreName, err)
	}
	c.settings.Lock() // the record's removal, its superblock write and undoing
	defer c.settings.Unlock()
	c.stripes.lockAll()
	c.mu.Lock()
	for i := range c.mu.lines {
		if ln := &c.mu.lines[i]; ln.mapped() && ln.core() == co.id {
			c.unmapLocked(lineIdx(i))
		}
	}
	delete(c.mu.cores, co.id)
	c.mu.Unlock()
	c.stripes.unlockAll()
	// The entries must say "unmapped" before the record goes: a loader
	// rejects dirty entries of unrecorded cores.
	err := c.syncMetadata(true)
	if err == nil {
		err = c.writeSuperblock(false)
	}
	if err != nil {
		// The core stays, without lines (its data is on the core device)
		// and recorded, so that the removal can be tried again.
		c.mu.Lock()
		c.mu.cores[co.id] = co
		c.mu.Unlock()
		co.state.And(^uint32(stateRemoved))
		return fmt.Errorf("remove core %q: %w", co.record.CoreName, err)
	}
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
	var out []*Core
	for _, co := range c.mu.cores {
		if co.dev != nil {
			out = append(out, co)
		}
	}
	slices.SortFunc(out, func(a, b *Core) int { return int(a.id) - int(b.id) })
	return out
}

// Stop stops a cache whose cores were all removed or detached: every
// metadata change is written, the superblock marked clean and the device
// flushed, so the next Load needs no recovery. No core can be added after.
func (c *Cache) Stop() error {
	c.mgmt.Lock()
	defer c.mgmt.Unlock()
	c.mu.Lock()
	attached := 0
	for _, co := range c.mu.cores {
		if co.dev != nil {
			attached++
		}
	}
	c.mu.stopped = attached == 0
	c.mu.Unlock()
	if attached > 0 {
		return onDevice("stop cache", c.dev, fmt.Errorf("%d cores still attached: %w", attached, ErrCoreExists))
	}
	c.stopCleaner()
	c.settings.Lock()
	defer c.settings.Unlock()
	if err := c.syncMetadata(true); err != nil {
		return onDevice("stop cache", c.dev, err)
	}
	if err := c.writeSuperblock(true); err != nil {
		return onDevice("stop cache", c.dev, err)
	}
	if err := c.dev.Flush(); err != nil {
		return onDevice("stop cache", c.dev, err)
	}
	return nil
}
