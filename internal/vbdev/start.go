package vbdev

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"blockcache/internal/bdev"
	"blockcache/internal/ocf"
	"blockcache/internal/ocf/metadata"
)

// tryStartLocked attaches whichever of v's bases exist and are not attached
// yet (claiming them) and starts v once both are: the cache instance is
// started if needed, the core added and the volume registered. A missing
// base is not an error. A failure leaves what was attached attached; Create
// rolls it back with detachLocked.
func (m *Manager) tryStartLocked(v *Vbdev) error {
	p := v.params
	if v.coreClaim == nil {
		if _, err := m.reg.Lookup(p.CoreBdev); err == nil {
			c, err := m.reg.Claim(p.CoreBdev, claimOwner, func() { m.hotRemoveCore(v) })
			if err != nil {
				return fmt.Errorf("OCF vbdev %q: attach core: %w", p.Name, err)
			}
			v.coreClaim = c
		}
	}
	if v.inst == nil {
		if err := m.attachCacheLocked(v); err != nil {
			return err
		}
	}
	if v.coreClaim == nil || v.inst == nil || v.core != nil {
		return nil
	}
	inst := v.inst
	if inst.cache == nil {
		if err := m.startCacheLocked(inst, v); err != nil {
			return fmt.Errorf("OCF vbdev %q: start cache %q: %w", p.Name, inst.name, err)
		}
	}
	id, recorded, err := coreIDFor(inst.cache, p.CoreBdev)
	if err != nil {
		return fmt.Errorf("OCF vbdev %q: add core: %w", p.Name, err)
	}
	if recorded != nil && recorded.VolumeName == p.Name {
		v.uuid = recorded.VolumeUUID // the volume keeps its identity
	}
	co, err := inst.cache.AddCore(ocf.CoreConfig{
		ID:     id,
		Device: v.coreClaim.Device(),
		Volume: bdev.Info{Name: p.Name, UUID: v.uuid, ProductName: ProductName},
	})
	if err != nil {
		return fmt.Errorf("OCF vbdev %q: add core %q: %w", p.Name, p.CoreBdev, err)
	}
	if err := m.reg.Register(co); err != nil {
		if rerr := inst.cache.RemoveCore(co, false); rerr != nil {
			err = errors.Join(err, rerr)
		}
		return fmt.Errorf("OCF vbdev %q: register volume: %w", p.Name, err)
	}
	v.core = co
	m.log.Info("OCF vbdev started", "name", p.Name, "cache", inst.name, "core", p.CoreBdev, "core_id", id)
	return nil
}

// attachCacheLocked joins v to the instance of its cache bdev, creating the
// instance (and claiming the cache bdev) if v is the first.
func (m *Manager) attachCacheLocked(v *Vbdev) error {
	p := v.params
	inst := m.mu.instances[p.CacheBdev]
	if inst == nil {
		if _, err := m.reg.Lookup(p.CacheBdev); err != nil {
			return nil // wait for it
		}
		name := p.CacheBdev
		c, err := m.reg.Claim(name, claimOwner, func() { m.hotRemoveCache(name) })
		if err != nil {
			return fmt.Errorf("OCF vbdev %q: attach cache: %w", p.Name, err)
		}
		inst = &instance{name: name, claim: c, lineSize: v.effectiveLineSize(), mode: v.mode}
		m.mu.instances[name] = inst
	}
	inst.members = append(inst.members, v)
	v.inst = inst
	return nil
}

// coreIDFor returns the id under which core bdev coreName joins c: the id
// the cache's metadata recorded for it (recorded is then that record), or
// the lowest id neither attached nor recorded.
func coreIDFor(c *ocf.Cache, coreName string) (id ocf.CoreID, recorded *metadata.CoreRecord, err error) {
	used := map[ocf.CoreID]bool{}
	for _, co := range c.Cores() {
		used[co.ID()] = true
	}
	for _, r := range c.Detached() {
		if r.CoreName == coreName {
			return ocf.CoreID(r.ID), &r, nil
		}
		used[ocf.CoreID(r.ID)] = true
	}
	for id := ocf.CoreID(0); id < ocf.MaxCores; id++ {
		if !used[id] {
			return id, nil, nil
		}
	}
	return 0, nil, fmt.Errorf("cache holds %d cores already: %w", ocf.MaxCores, ErrInvalidParam)
}

// startCacheLocked starts inst's engine cache for its first vbdev v: it
// loads the cache the device holds when that cache records v's core, and
// initialises the device when it holds no cache (or an empty one). A device
// holding another cache, or damaged metadata, is refused unless v asked for
// force.
func (m *Manager) startCacheLocked(inst *instance, v *Vbdev) error {
	dev := inst.claim.Device()
	p := v.params
	sb, err := ocf.Probe(dev)
	load := false
	switch {
	case errors.Is(err, metadata.ErrNoMetadata):
	case err != nil && !p.Force:
		return fmt.Errorf("%w: %w (force discards it and reinitialises the device)", ErrForeignCache, err)
	case err != nil:
		m.log.Warn("reinitialising a cache device with unreadable metadata (force)", "cache", inst.name, "err", err)
	case len(sb.Cores) == 0:
	case recordsCore(sb, p.CoreBdev):
		load = true
	case !p.Force:
		return fmt.Errorf("%w: the device holds cache %s with cores %s, not %q (force discards it and reinitialises the device)",
			ErrForeignCache, sb.CacheID, coreNames(sb), p.CoreBdev)
	default:
		m.log.Warn("reinitialising a cache device that held another cache (force)", "cache", inst.name, "cores", coreNames(sb))
	}
	log := m.log.With("cache", inst.name)
	progress := map[string]func(done, total int64){}
	cfg := ocf.Config{LineSize: inst.lineSize, Mode: inst.mode, Progress: func(op string, done, total int64) {
		if progress[op] == nil {
			progress[op] = newProgressLog(log, "cache "+op)
		}
		progress[op](done, total)
	}}
	if !load {
		c, err := ocf.New(dev, cfg)
		if err != nil {
			return err
		}
		inst.cache = c
		c.StartCleaner()
		m.log.Info("cache started", "cache", inst.name, "mode", inst.mode.String(), "line_size_kib", inst.lineSize/1024, "lines", c.NumLines(), "id", c.ID())
		return nil
	}
	c, rep, err := ocf.Load(dev, cfg)
	if err != nil {
		return err
	}
	if p.LineSizeKiB != 0 && int64(p.LineSizeKiB)*1024 != c.LineSize() {
		return fmt.Errorf("%w: the cache on the device has %d KiB lines, not %d KiB", ErrInvalidParam, c.LineSize()/1024, p.LineSizeKiB)
	}
	if c.Mode() != v.mode {
		m.log.Warn("loaded cache keeps its recorded mode", "cache", inst.name, "mode", c.Mode().String(), "requested", v.mode.String())
	}
	inst.cache, inst.mode, inst.lineSize = c, c.Mode(), c.LineSize()
	c.StartCleaner()
	if rep.Damaged != nil {
		m.log.Warn("cache metadata: one superblock copy is damaged; the other was used", "cache", inst.name, "damage", rep.Damaged)
	}
	m.log.Info("cache loaded", "cache", inst.name, "clean_shutdown", rep.Clean, "lines", rep.Lines,
		"dirty_lines", rep.DirtyLines, "dropped_clean_lines", rep.DroppedClean, "mode", c.Mode().String(), "id", c.ID())
	return nil
}

func recordsCore(sb *metadata.Superblock, coreName string) bool {
	for _, r := range sb.Cores {
		if r.CoreName == coreName {
			return true
		}
	}
	return false
}

func coreNames(sb *metadata.Superblock) string {
	var names []string
	for _, r := range sb.Cores {
		names = append(names, fmt.Sprintf("%q", r.CoreName))
	}
	return strings.Join(names, ", ")
}

// detachLocked undoes tryStartLocked: the volume is unregistered (its users,
// e.g. an NBD export, are told through their claim), the core leaves the
// cache (written back first with flush), the bases are released, and the
// cache instance stops with its last member.
func (m *Manager) detachLocked(v *Vbdev, flush bool) error {
	p := v.params
	if v.core != nil {
		if _, err := m.reg.Unregister(p.Name); err != nil && !errors.Is(err, bdev.ErrNoSuchDevice) {
			return fmt.Errorf("OCF vbdev %q: unregister volume: %w", p.Name, err)
		}
		if err := v.inst.cache.RemoveCore(v.core, flush); err != nil {
			// Keep the core and its data; bring the volume back.
			if rerr := m.reg.Register(v.core); rerr != nil {
				err = errors.Join(err, rerr)
			}
			return fmt.Errorf("OCF vbdev %q: remove core %q: %w", p.Name, p.CoreBdev, err)
		}
		v.core = nil
	}
	if v.coreClaim != nil {
		v.coreClaim.Release()
		v.coreClaim = nil
	}
	if inst := v.inst; inst != nil {
		inst.members = slices.DeleteFunc(inst.members, func(x *Vbdev) bool { return x == v })
		v.inst = nil
		if len(inst.members) == 0 {
			m.stopInstanceLocked(inst)
		}
	}
	return nil
}

// stopInstanceLocked stops an instance without members and releases its
// cache bdev.
func (m *Manager) stopInstanceLocked(inst *instance) {
	if inst.cache != nil {
		if err := inst.cache.Stop(); err != nil {
			m.log.Warn("cache stop", "cache", inst.name, "err", err)
		}
		m.log.Info("cache stopped", "cache", inst.name)
	}
	if inst.claim != nil {
		inst.claim.Release()
	}
	delete(m.mu.instances, inst.name)
}
