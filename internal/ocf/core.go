package ocf

import (
	"fmt"
	"sync/atomic"

	"blockcache/internal/bdev"
	"blockcache/internal/latency"
	"blockcache/internal/ocf/metadata"
)

// Core is a core device attached to a cache, and the cached volume built on
// it: a bdev.Device with the core's size whose IO goes through the cache.
// Its IO methods are safe for concurrent use.
type Core struct {
	// Immutable.
	cache *Cache
	id    CoreID

	// dev, info, record and seq are set when the core is attached
	// (AddCore); dev is nil while detached. Written under cache.mu, and
	// only while no IO on the core is admitted (its state bars new IO and
	// a drain waited for the rest); IO reads them without the lock, which
	// that makes safe.
	dev    bdev.Device
	info   bdev.Info // the volume's description
	record metadata.CoreRecord
	seq    *seqDetector // sequential cutoff state; safe for concurrent use

	// Atomics, read and written without a lock.
	stats counters
	lat   volumeLatency
	// immediate is set at AddCore when the cache and core devices are both
	// bdev.Immediate: then no IO on the volume waits for a device, and the
	// volume serves every TryReadAt and TryWriteAt.
	immediate atomic.Bool
	// state holds the stateClosed and stateRemoved bits. An IO checks it
	// after taking its stripes; whoever sets a bit then takes and releases
	// every stripe, which waits for the IO already admitted (drain).
	state atomic.Uint32
	// writeThrough counts the holds that make writes to this core go
	// write-through whatever the cache mode (HoldWriteThrough).
	writeThrough atomic.Int32

	// occupied and dirtyLines count this core's mapped and dirty lines.
	// Guarded by cache.mu.
	occupied, dirtyLines int
}

// ID returns the core's id within its cache.
func (co *Core) ID() CoreID { return co.id }

// Cache returns the cache the core belongs to.
func (co *Core) Cache() *Cache { return co.cache }

// CoreDevice returns the backing device.
func (co *Core) CoreDevice() bdev.Device { return co.dev }

// Info implements bdev.Device: the volume has the core's geometry.
func (co *Core) Info() bdev.Info { return co.info }

// Close implements bdev.Device: it waits for in-flight IO, after which IO
// on the volume fails with bdev.ErrClosed. The core stays attached to the
// cache (its data with it); detach it with Cache.RemoveCore.
func (co *Core) Close() error {
	co.state.Or(stateClosed)
	co.cache.drain()
	return nil
}

// volumeAbilities are the abilities of a volume over a core device with
// abilities core. The volume discards when the core can (Discard), and a
// discarded range then reads back as the core makes it, since its cache
// lines are invalidated. It has no WriteZeroes: the engine does not offer
// it (callers such as the NBD server write zero buffers instead). The cache
// mode plays no part: Discard works alike in every mode, and the mode may
// change while the volume lives, when its Info may not.
func volumeAbilities(core bdev.Abilities) bdev.Abilities {
	return bdev.Abilities{Discard: core.Discard, ZeroesOnDiscard: core.ZeroesOnDiscard}
}

// Core states, bits of Core.state.
const (
	stateClosed  = 1 << iota // Close was called
	stateRemoved             // RemoveCore is removing or removed the core
)

// admit lets an IO on the volume proceed, or fails it if the volume was
// closed or its core removed. It is called with the IO's stripes held.
func (co *Core) admit(op string) error {
	switch st := co.state.Load(); {
	case st == 0:
		return nil
	case st&stateClosed != 0:
		return fmt.Errorf("%s %s: %w", co.info.Name, op, bdev.ErrClosed)
	default:
		return fmt.Errorf("%s %s: %w", co.info.Name, op, ErrStopped)
	}
}

// ReadAt implements bdev.Device.
func (co *Core) ReadAt(p []byte, off int64) error {
	if err := bdev.CheckIO(&co.info, "read", off, int64(len(p))); err != nil || len(p) == 0 {
		return err
	}
	return co.cache.read(co, p, off)
}

// TryReadAt implements bdev.TryReader: it serves a read that lies within
// one cache line whose touched sectors are all valid (a hit), unless a
// writer holds the line's stripe; anything else may wait for the core, or
// for a lock held across core IO, and is left to ReadAt. On a volume whose
// devices are all immediate (memory) it serves every read.
func (co *Core) TryReadAt(p []byte, off int64) (bool, error) {
	if co.immediate.Load() {
		return true, co.ReadAt(p, off)
	}
	if err := bdev.CheckIO(&co.info, "read", off, int64(len(p))); err != nil || len(p) == 0 {
		return true, err
	}
	start := latency.Now()
	served, err := co.cache.readHit(co, p, off, false)
	if served {
		co.lat.readHit.Since(uint64(off)>>co.cache.layout.lineShift, start)
	}
	return served, err
}

// TryWriteAt implements bdev.TryWriter. Every write may wait for a device
// (the core, or the cache device for metadata) unless the volume's devices
// are all immediate, when it serves every write.
func (co *Core) TryWriteAt(p []byte, off int64, fua bool) (bool, error) {
	if co.immediate.Load() {
		return true, co.WriteAt(p, off, fua)
	}
	return false, nil
}

// WriteAt implements bdev.Device.
func (co *Core) WriteAt(p []byte, off int64, fua bool) error {
	if err := bdev.CheckIO(&co.info, "write", off, int64(len(p))); err != nil || len(p) == 0 {
		return err
	}
	return co.cache.write(co, p, off, fua)
}

// Discard implements bdev.Discarder: the range is discarded on the core and
// invalidated in the cache, dirty sectors included. It returns an error
// wrapping bdev.ErrNotSupported, changing nothing, when the core device
// cannot discard (when Info's Abilities lack Discard).
func (co *Core) Discard(off, length int64) error {
	if err := bdev.CheckIO(&co.info, "discard", off, length); err != nil || length == 0 {
		return err
	}
	return co.cache.discard(co, off, length)
}

// Flush implements bdev.Device: every acknowledged write becomes durable on
// the device holding it (the cache device for dirty data, the core
// otherwise). It does not write dirty data back to the core; see
// Cache.FlushDirty.
func (co *Core) Flush() error {
	// Hold a stripe, as IO does, so that RemoveCore's drain waits for the
	// flush before it detaches the core device.
	s := &co.cache.stripes.locks[0]
	s.RLock()
	defer s.RUnlock()
	if err := co.admit("flush"); err != nil {
		return err
	}
	// The cache device first (data, then the metadata mapping it).
	if err := co.cache.syncMetadata(false); err != nil {
		co.cacheError(false)
		return fmt.Errorf("%s flush: cache device: %w", co.info.Name, err)
	}
	if err := co.dev.Flush(); err != nil {
		co.stats.coreWrErrors.Add(1)
		return fmt.Errorf("%s flush: core device: %w", co.info.Name, err)
	}
	return nil
}

// Stats returns a snapshot of the core's statistics. Usage counts this core's
// lines; Free is the cache's free space.
func (co *Core) Stats() Stats {
	c := co.cache
	var s Stats
	co.stats.addTo(&s)
	c.mu.Lock()
	occupied, dirty, free := co.occupied, co.dirtyLines, c.layout.numLines-c.occupiedLocked()
	c.mu.Unlock()
	c.fillUsage(&s, occupied, dirty, free)
	return s
}

// ResetStats zeroes the request, block and error counts Stats reports from
// now on. Counters, which metrics read, are not reset.
func (co *Core) ResetStats() { co.stats.reset() }
