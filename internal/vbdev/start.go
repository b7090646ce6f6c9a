package vbdev

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"syscall"

	"blockcache/internal/bdev"
	"blockcache/internal/bdev/signature"
	"blockcache/internal/ocf"
	"blockcache/internal/ocf/metadata"
	"blockcache/internal/ocf/recovery"
)

// tryStartLocked attaches whichever of v's bases exist and are not attached
// yet (claiming them) and starts v once both are: the cache instance is
// started if needed, the core added and the volume registered. A missing
// base is not an error. A failure leaves what was attached attached; Create
// rolls it back with detachLocked. Its errors are the start's reason
// (Info.Err): they do not name v, which whoever reports them does.
func (m *Manager) tryStartLocked(v *Vbdev) error {
	p := v.params
	if v.coreClaim == nil {
		if o := m.coreHolderLocked(p.CoreBdev, v); o != nil {
			m.log.Info("OCF vbdev waits: its core bdev is held by another OCF vbdev", "vbdev", p.Name, "core", p.CoreBdev, "holder", o.params.Name)
		} else if _, err := m.reg.Lookup(p.CoreBdev); err == nil {
			c, err := m.reg.Claim(p.CoreBdev, claimOwner, func() { m.hotRemoveCore(v) })
			if err != nil {
				return fmt.Errorf("attach core: %w", err)
			}
			if c.Device().Info().ReadOnly {
				// As SPDK, whose open of the core for writing fails: a
				// read-only core would take wb's writes into the cache
				// with no way back to the core. Checked on the claimed
				// device, which is the one attached.
				c.Release()
				return fmt.Errorf("attach core: bdev %q is read-only, and a core must take the cache's writes: %w", p.CoreBdev, syscall.EROFS)
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
			return err
		}
	}
	id, recorded, err := coreIDFor(inst.cache, p.CoreBdev)
	if err != nil {
		return fmt.Errorf("add core %q: %w", p.CoreBdev, err)
	}
	if recorded != nil {
		if err := m.checkCoreIdentity(inst, recorded, v.coreClaim.Device()); err != nil {
			return err
		}
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
		return err
	}
	if err := m.reg.Register(co); err != nil {
		if rerr := undoAddCore(inst.cache, co, recorded == nil); rerr != nil {
			err = errors.Join(err, rerr)
		}
		return err
	}
	v.core = co
	m.log.Info("OCF vbdev started", "name", p.Name, "cache", inst.name, "core", p.CoreBdev, "core_id", id)
	return nil
}

// undoAddCore takes co, just added and never registered, out of c again.
// A recorded core is only detached: its record and its lines stay for a
// later start. A new core's record is dropped (RemoveCore with flush; no IO
// reached it, so nothing is written back), or the metadata would keep a
// core no volume claims; if that fails, it is detached all the same.
func undoAddCore(c *ocf.Cache, co *ocf.Core, isNew bool) error {
	if !isNew {
		return c.RemoveCore(co, false)
	}
	err := c.RemoveCore(co, true)
	if err == nil {
		return nil
	}
	if derr := c.RemoveCore(co, false); derr != nil {
		err = errors.Join(err, derr)
	}
	return err
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
			return fmt.Errorf("attach cache: %w", err)
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
	return 0, nil, fmt.Errorf("cache %q holds %d cores already: %w", c.Device().Info().Name, ocf.MaxCores, ErrInvalidParam)
}

// startCacheLocked starts inst's engine cache for its first vbdev v: it
// loads the cache the device holds when that cache records v's core, and
// initialises the device when it is blank or holds a cache without cores.
// Anything else is refused unless v asked for force: another cache,
// damaged metadata, the remains of a cache whose superblocks are lost, a
// file system or other signature (see checkBlank).
func (m *Manager) startCacheLocked(inst *instance, v *Vbdev) error {
	dev := inst.claim.Device()
	p := v.params
	sb, err := ocf.Probe(dev)
	load := false
	switch {
	case errors.Is(err, metadata.ErrNoMetadata):
		if err := m.checkBlank(inst, dev, p.Force); err != nil {
			return err
		}
	case err != nil && !p.Force:
		return fmt.Errorf("%w: %w (run 'blockcache recover' to write its dirty data back, or pass force to discard it and reinitialise the device)", ErrForeignCache, err)
	case err != nil:
		m.warnDiscard(inst, dev, "reinitialising a cache device with unreadable metadata (force)", "err", err)
	case len(sb.Cores) == 0:
	case recordsCore(sb, p.CoreBdev):
		load = true
	case !p.Force:
		return fmt.Errorf("%w: cache device %q holds cache %s with cores %s, not %q (force discards it and reinitialises the device)",
			ErrForeignCache, inst.name, sb.CacheID, coreNames(sb), p.CoreBdev)
	default:
		m.warnDiscard(inst, dev, "reinitialising a cache device that held another cache (force)", "cache_id", sb.CacheID.String(), "cores", coreNames(sb))
	}
	log := m.log.With("cache", inst.name)
	progress := map[string]func(done, total int64){}
	cfg := ocf.Config{LineSize: inst.lineSize, Mode: inst.mode, VolatileDirtyMetadata: p.VolatileDirtyMetadata, Progress: func(op string, done, total int64) {
		if progress[op] == nil {
			progress[op] = newProgressLog(log, "cache "+op)
		}
		progress[op](done, total)
	}}
	if load {
		loaded, err := m.loadCacheLocked(inst, v, cfg)
		switch {
		case loaded || err != nil && !errors.Is(err, metadata.ErrCorrupt):
			return err
		case !p.Force:
			return fmt.Errorf("%w (run 'blockcache recover' to write its dirty data back, or pass force to discard it and reinitialise the device)", err)
		}
		m.warnDiscard(inst, dev, "reinitialising a cache device with damaged metadata (force)", "err", err)
	}
	c, err := ocf.New(dev, cfg)
	if err != nil {
		return err
	}
	inst.cache = c
	c.StartCleaner()
	m.log.Info("cache started", "cache", inst.name, "mode", inst.mode.String(), "line_size_kib", inst.lineSize/1024, "lines", c.NumLines(), "id", c.ID(),
		"volatile_dirty_metadata", c.VolatileDirtyMetadata())
	return nil
}

// loadCacheLocked loads the cache inst's device holds, for its first vbdev
// v, and reports whether it did. An error wrapping metadata.ErrCorrupt says
// the metadata is damaged (the caller may reinitialise with force).
func (m *Manager) loadCacheLocked(inst *instance, v *Vbdev, cfg ocf.Config) (bool, error) {
	p := v.params
	c, rep, err := ocf.Load(inst.claim.Device(), cfg)
	if err != nil {
		return false, err
	}
	if p.LineSizeKiB != 0 && int64(p.LineSizeKiB)*1024 != c.LineSize() {
		err := fmt.Errorf("%w: the cache on cache device %q has %d KiB lines, not %d KiB", ErrInvalidParam, inst.name, c.LineSize()/1024, p.LineSizeKiB)
		// Load marked the device as running; leave it as it was found.
		if serr := c.Stop(); serr != nil {
			err = errors.Join(err, serr)
		}
		return false, err
	}
	if c.Mode() != v.mode {
		m.log.Warn("loaded cache keeps its recorded mode", "cache", inst.name, "mode", c.Mode().String(), "requested", v.mode.String())
	}
	if c.VolatileDirtyMetadata() != p.VolatileDirtyMetadata {
		m.log.Warn("loaded cache keeps its recorded volatile_dirty_metadata", "cache", inst.name,
			"volatile_dirty_metadata", c.VolatileDirtyMetadata(), "requested", p.VolatileDirtyMetadata)
	}
	inst.cache, inst.mode, inst.lineSize = c, c.Mode(), c.LineSize()
	c.StartCleaner()
	if rep.Damaged != nil {
		m.log.Warn("cache metadata: one superblock copy is damaged; the other was used", "cache", inst.name, "damage", rep.Damaged)
	}
	m.log.Info("cache loaded", "cache", inst.name, "clean_shutdown", rep.Clean, "lines", rep.Lines,
		"dirty_lines", rep.DirtyLines, "dropped_clean_lines", rep.DroppedClean, "mode", c.Mode().String(), "id", c.ID())
	return true, nil
}

// checkBlank decides whether a cache device whose superblocks hold no
// metadata may be initialised: only when nothing is on it. Entry sectors
// carrying a cache tag are the remains of a cache whose superblocks were
// lost, and may describe dirty data the cores lack; a file system, swap,
// volume manager, RAID or partition table signature is someone's data.
// Either is refused with an error wrapping ErrNotBlank, unless force, which
// logs what it overwrites.
func (m *Manager) checkBlank(inst *instance, dev bdev.Device, force bool) error {
	sigs, err := signature.DetectDevice(dev)
	if err != nil {
		return err
	}
	scan := recovery.ScanTags(dev, newProgressLog(m.log.With("cache", inst.name), "scan for cache remains"))
	tag, sectors := scan.Dominant()
	var found []string
	if sectors > 0 {
		dirty := "dirty lines may be on it"
		if plan, err := recovery.Analyze(dev, recovery.Options{}); err == nil {
			dirty = fmt.Sprintf("%s dirty lines in the entries still readable", groupThousands(int64(len(plan.Dirty))))
			if plan.DamagedSectors > 0 {
				dirty += fmt.Sprintf(", more may be in %s damaged entry sectors", groupThousands(plan.DamagedSectors))
			}
		}
		found = append(found, fmt.Sprintf("%s entry sectors of cache %s (%s)", groupThousands(sectors), tag, dirty))
	}
	if len(sigs) > 0 {
		found = append(found, signature.Describe(sigs))
	}
	switch {
	case len(found) == 0:
		return nil
	case !force && sectors > 0:
		return fmt.Errorf("%w: cache device %q holds no readable superblock but %s: run 'blockcache recover' to write them back, or pass force to discard them",
			ErrNotBlank, inst.name, strings.Join(found, " and "))
	case !force:
		return fmt.Errorf("%w: cache device %q holds no cache but %s: refusing to overwrite it (wipe the device first, e.g. wipefs -a, or pass force)",
			ErrNotBlank, inst.name, strings.Join(found, " and "))
	case sectors > 0:
		m.warnDiscard(inst, dev, "initialising over the remains of a cache whose superblocks are lost (force)",
			"cache_tag", tag.String(), "entry_sectors", sectors, "found", strings.Join(found, " and "))
	default:
		m.log.Warn("initialising a cache over a device that is not blank (force): what it held is overwritten", "cache", inst.name, "found", strings.Join(found, " and "))
	}
	return nil
}

// warnDiscard logs, loudly, that force reinitialises inst's device and how
// many dirty lines that discards, counted from the entries still readable.
func (m *Manager) warnDiscard(inst *instance, dev bdev.Device, msg string, args ...any) {
	args = append([]any{"cache", inst.name}, args...)
	plan, err := recovery.Analyze(dev, recovery.Options{})
	if err != nil {
		m.log.Warn(msg+"; its dirty lines cannot be counted", append(args, "count_err", err)...)
		return
	}
	args = append(args, "dirty_lines_discarded", len(plan.Dirty), "dirty_bytes_discarded", plan.DirtyBytes())
	if plan.DamagedSectors > 0 {
		args = append(args, "damaged_entry_sectors", plan.DamagedSectors)
	}
	m.log.Warn(msg+": its dirty data is discarded", args...)
}

// checkCoreIdentity refuses to attach dev as the core the metadata
// recorded as rec unless it is that core: the same size and, when both are
// known, the same identity (bdev.Identifier). A bdev name alone proves
// nothing: disks are renumbered, files replaced. The error wraps
// ErrCoreMismatch and names both; the cache keeps the core's data.
func (m *Manager) checkCoreIdentity(inst *instance, rec *metadata.CoreRecord, dev bdev.Device) error {
	info := dev.Info()
	id := bdev.IdentityOf(dev)
	sameID := rec.Identity == "" || id == "" || rec.Identity == id
	if uint64(info.SizeBytes()) == rec.SizeBytes && sameID {
		switch {
		case rec.Identity == "":
			m.log.Info("core identity not recorded (metadata written before format version 2): attached by bdev name and size",
				"cache", inst.name, "core", info.Name, "core_id", rec.ID, "identity", id)
		case id == "":
			m.log.Warn("core device cannot tell its identity: attached by bdev name and size", "cache", inst.name, "core", info.Name,
				"core_id", rec.ID, "recorded_identity", rec.Identity)
		}
		return nil
	}
	return fmt.Errorf("%w: cache %q recorded core %d as %q, %d bytes, identity %s; bdev %q is %d bytes, identity %s: refusing to attach it, the cache keeps the core's data",
		ErrCoreMismatch, inst.name, rec.ID, rec.CoreName, rec.SizeBytes, orUnknown(rec.Identity), info.Name, info.SizeBytes(), orUnknown(id))
}

func orUnknown(id string) string {
	if id == "" {
		return "unknown"
	}
	return fmt.Sprintf("%q", id)
}

// groupThousands renders n with commas every three digits: 1,234,567.
func groupThousands(n int64) string {
	if n < 0 {
		return "-" + groupThousands(-n)
	}
	s := fmt.Sprint(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
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
// cache instance stops with its last member. Its errors name the step that
// failed, not v: callers do.
func (m *Manager) detachLocked(v *Vbdev, flush bool) error {
	p := v.params
	if v.core != nil {
		if _, err := m.reg.Unregister(p.Name); err != nil && !errors.Is(err, bdev.ErrNoSuchDevice) {
			return err
		}
		if err := v.inst.cache.RemoveCore(v.core, flush); err != nil {
			// Keep the core and its data; bring the volume back.
			if rerr := m.reg.Register(v.core); rerr != nil {
				err = errors.Join(err, rerr)
			}
			return err
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
