package ocf

import (
	"fmt"
	"sync"

	"blockcache/internal/bdev"
)

// Core is a core device attached to a cache, and the cached volume built on
// it: a bdev.Device with the core's size whose IO goes through the cache.
// Its IO methods are safe for concurrent use.
type Core struct {
	cache *Cache
	id    CoreID
	dev   bdev.Device
	info  bdev.Info // the volume's description; immutable

	stats counters

	// gate is held shared by every IO for its whole duration and exclusively
	// by RemoveCore, which thereby waits for in-flight IO.
	gate    sync.RWMutex
	removed bool // guarded by gate

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

// Close implements bdev.Device. The volume holds no resources of its own; a
// core is detached with Cache.RemoveCore.
func (co *Core) Close() error { return nil }

// enter admits an IO on the volume, or fails if the core was removed.
func (co *Core) enter(op string) error {
	co.gate.RLock()
	if co.removed {
		co.gate.RUnlock()
		return fmt.Errorf("%s %s: %w", co.info.Name, op, ErrStopped)
	}
	return nil
}

func (co *Core) leave() { co.gate.RUnlock() }

// ReadAt implements bdev.Device.
func (co *Core) ReadAt(p []byte, off int64) error {
	if err := bdev.CheckIO(co.info, "read", off, int64(len(p))); err != nil || len(p) == 0 {
		return err
	}
	if err := co.enter("read"); err != nil {
		return err
	}
	defer co.leave()
	return co.cache.read(co, p, off)
}

// WriteAt implements bdev.Device.
func (co *Core) WriteAt(p []byte, off int64, fua bool) error {
	if err := bdev.CheckIO(co.info, "write", off, int64(len(p))); err != nil || len(p) == 0 {
		return err
	}
	if err := co.enter("write"); err != nil {
		return err
	}
	defer co.leave()
	return co.cache.write(co, p, off, fua)
}

// Discard implements bdev.Discarder: the range is discarded on the core and
// invalidated in the cache, dirty sectors included. It returns an error
// wrapping bdev.ErrNotSupported, changing nothing, when the core device
// cannot discard.
func (co *Core) Discard(off, length int64) error {
	if err := bdev.CheckIO(co.info, "discard", off, length); err != nil || length == 0 {
		return err
	}
	if !bdev.CanDiscard(co.dev) {
		return fmt.Errorf("%s discard: core %s: %w", co.info.Name, co.dev.Info().Name, bdev.ErrNotSupported)
	}
	if err := co.enter("discard"); err != nil {
		return err
	}
	defer co.leave()
	return co.cache.discard(co, off, length)
}

// Flush implements bdev.Device: every acknowledged write becomes durable on
// the device holding it (the cache device for dirty data, the core
// otherwise). It does not write dirty data back to the core; see
// Cache.FlushDirty.
func (co *Core) Flush() error {
	if err := co.enter("flush"); err != nil {
		return err
	}
	defer co.leave()
	if err := co.cache.dev.Flush(); err != nil {
		co.stats.cacheWrErrors.Add(1)
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
	occupied, dirty, free := co.occupied, co.dirtyLines, c.mu.lists[listFree].n
	c.mu.Unlock()
	c.fillUsage(&s, occupied, dirty, free)
	return s
}

// ResetStats zeroes the core's request, block and error counters.
func (co *Core) ResetStats() { co.stats.reset() }
