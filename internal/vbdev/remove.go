package vbdev

import (
	"errors"
	"fmt"
	"slices"

	"blockcache/internal/bdev"
)

// Delete removes a vbdev for good (bdev_ocf_delete): its dirty data is
// written back to the core, the volume is unregistered, the core leaves the
// cache, the bases are released, and the cache stops with its last core.
// After it returns the core bdev alone holds all the data, unless the
// core bdev is missing (a waiting vbdev, one whose core was hot-removed
// included): then nothing is written and the cache keeps whatever it
// holds of the core, detached. On failure the vbdev stays as it was.
//
// The volume serves while its data is written back, with its writes held
// write-through (ocf.Cache.HoldWriteThrough), so the write-back converges
// however busy the volume is and leaves nothing for the final one, run
// once the volume is unregistered. A background flush of the vbdev is
// cancelled: the delete writes everything back itself.
func (m *Manager) Delete(name string) error {
	m.lock()
	defer m.unlock()
	v := m.findLocked(name)
	if v == nil {
		return fmt.Errorf("delete OCF vbdev %q: %w", name, ErrNoSuchVbdev)
	}
	if v.core != nil {
		// Write back while the volume still serves, so a failure leaves
		// everything in place; the hold is released whatever happens (after
		// a delete the core is gone).
		cancelFlushLocked(v)
		defer v.inst.cache.HoldWriteThrough(v.core)()
		if err := m.writeBackLocked(v, "delete"); err != nil {
			return fmt.Errorf("delete OCF vbdev %q: write back dirty data: %w", name, err)
		}
	}
	if err := m.detachLocked(v, true); err != nil {
		return fmt.Errorf("delete OCF vbdev %q: %w", name, err)
	}
	m.forgetLocked(v)
	if v.coreGone {
		// The core is missing, so nothing could be written back: the
		// cache device keeps the detached core's record and lines.
		m.log.Warn("OCF vbdev deleted while its core bdev is missing: the cache keeps the core's data, dirty data included; a vbdev of this core on this cache brings it back, 'blockcache recover' writes it back offline, force discards it",
			"name", name, "core", v.params.CoreBdev, "cache", v.params.CacheBdev, "dirty_bytes", v.dirtyKept)
	}
	m.log.Info("OCF vbdev deleted", "name", name)
	m.startCoreWaitersLocked(v.params.CoreBdev)
	return nil
}

func (m *Manager) forgetLocked(v *Vbdev) {
	m.mu.vbdevs = slices.DeleteFunc(m.mu.vbdevs, func(x *Vbdev) bool { return x == v })
}

// hotRemoveCore runs when v's core bdev is unregistered: v's volume goes
// without writing anything to the missing core, and v waits for a bdev of
// the core's name, as Open CAS keeps a core whose device vanished as an
// inactive core. It is a claim callback: see Manager on why it is queued.
func (m *Manager) hotRemoveCore(v *Vbdev) {
	m.enqueue(func() { m.hotRemoveCoreLocked(v) })
}

// hotRemoveCoreLocked detaches v's core from the cache, which keeps its
// lines and its record (ocf.Cache.RemoveCore without flush), and leaves v
// waiting in its instance: the cache keeps running and the cache bdev
// stays claimed, so that no other vbdev can take the device that holds
// the core's dirty data. bdevAddedLocked starts v again, re-attaching the
// core under its recorded id, when a bdev of the core's name appears.
func (m *Manager) hotRemoveCoreLocked(v *Vbdev) {
	if !slices.Contains(m.mu.vbdevs, v) {
		return
	}
	v.coreClaim = nil // the registry dropped it
	p := v.params
	if v.core == nil {
		m.log.Warn("core bdev removed: OCF vbdev waits for it", "vbdev", p.Name, "core", p.CoreBdev)
		return
	}
	if _, err := m.reg.Unregister(p.Name); err != nil && !errors.Is(err, bdev.ErrNoSuchDevice) {
		m.log.Error("hot-remove of core: unregister volume", "vbdev", p.Name, "core", p.CoreBdev, "err", err)
	}
	// Without flush RemoveCore fails only for a core already removed.
	if err := v.inst.cache.RemoveCore(v.core, false); err != nil {
		m.log.Error("hot-remove of core: detach from cache", "vbdev", p.Name, "core", p.CoreBdev, "err", err)
	}
	// Counted once the IO admitted before has drained: it stays put.
	dirty := int64(v.core.Stats().Usage.Dirty) * 4096
	v.core = nil
	v.coreGone, v.dirtyKept = true, dirty
	m.log.Warn("core bdev removed: OCF vbdev unregistered, waiting for its core; the cache keeps the core's data", "vbdev", p.Name,
		"core", p.CoreBdev, "cache", p.CacheBdev, "dirty_bytes", dirty)
}

// hotRemoveCache runs when a cache bdev is unregistered: every vbdev on it
// goes away. A claim callback, queued like hotRemoveCore.
func (m *Manager) hotRemoveCache(name string) {
	m.enqueue(func() { m.hotRemoveCacheLocked(name) })
}

func (m *Manager) hotRemoveCacheLocked(name string) {
	inst := m.mu.instances[name]
	if inst == nil {
		return
	}
	inst.claim = nil // the registry dropped it
	for _, v := range slices.Clone(inst.members) {
		if err := m.detachLocked(v, false); err != nil {
			m.log.Error("hot-remove of cache", "vbdev", v.params.Name, "cache", name, "err", err)
		}
		m.forgetLocked(v)
		m.log.Warn("cache bdev removed: OCF vbdev unregistered", "vbdev", v.params.Name, "cache", name)
	}
}

// Shutdown stops every cache for a daemon shutdown (the seed's "dirty"
// unregister path): with writeBack each cache's dirty data is written back
// first, with the volume's writes held write-through as Delete does, so it
// converges even if something still writes; then the volumes are
// unregistered, the cores detached (kept in the cache's metadata) and the
// caches stopped and marked clean, so the next start loads them intact,
// dirty data included. Background flushes are cancelled first.
func (m *Manager) Shutdown(writeBack bool) error {
	m.lock()
	defer m.unlock()
	for _, v := range m.mu.vbdevs {
		cancelFlushLocked(v)
	}
	var first error
	for _, v := range slices.Clone(m.mu.vbdevs) {
		release := func() {}
		if writeBack && v.core != nil {
			release = v.inst.cache.HoldWriteThrough(v.core)
			if err := m.writeBackLocked(v, "shutdown"); err != nil && first == nil {
				first = fmt.Errorf("shutdown: OCF vbdev %q: write back dirty data: %w", v.params.Name, err)
			}
		}
		if err := m.detachLocked(v, false); err != nil && first == nil {
			first = fmt.Errorf("shutdown: OCF vbdev %q: %w", v.params.Name, err)
		}
		release()
	}
	m.mu.vbdevs = nil
	return first
}
