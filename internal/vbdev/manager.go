// Package vbdev is the OCF vbdev lifecycle of the seed (SPDK's vbdev_ocf.c)
// on top of the engine: creating cached volumes from a cache bdev and a core
// bdev, waiting for bases that do not exist yet, sharing one cache between
// several cores, claiming the bases, registering the volume, deleting it
// cleanly, and reacting to a base's hot-remove.
package vbdev

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"

	"github.com/google/uuid"

	"blockcache/internal/bdev"
	"blockcache/internal/ocf"
)

// claimOwner is the owner name the OCF module claims base bdevs under.
const claimOwner = "bdev_ocf"

// Params are bdev_ocf_create's parameters.
type Params struct {
	Name string
	Mode string
	// LineSizeKiB is the cache line size in KiB; 0 means the cache's (for a
	// shared cache) or the default 4.
	LineSizeKiB uint64
	CacheBdev   string
	CoreBdev    string
	// Force reinitialises a cache device that holds another cache or
	// damaged metadata, discarding it.
	Force bool
	// VolatileDirtyMetadata asks for a cache whose changes of dirty state
	// are durable at flush or FUA only (ocf.Config.VolatileDirtyMetadata).
	// It is per cache: the vbdev that initialises the cache chooses, a
	// loaded cache keeps what it recorded.
	VolatileDirtyMetadata bool
}

// Vbdev is one OCF vbdev: a core on a cache instance, exported as a bdev
// named Name once both bases exist. Fields other than the immutable params
// are guarded by Manager.mu.
type Vbdev struct {
	params Params
	mode   ocf.Mode // requested mode
	uuid   uuid.UUID

	// auto is set for a vbdev examine re-created from cache metadata, until
	// a bdev_ocf_create for it adopts it.
	auto bool

	coreClaim *bdev.Claim // held while the core bdev is attached
	inst      *instance   // set while the cache bdev is attached
	core      *ocf.Core   // set while started
	flush     *flushJob   // the last bdev_ocf_flush_start, if any

	// failed is why the last start failed (StateFailed); nil otherwise.
	// While it is set v holds no claims and core and inst are nil.
	failed error

	// coreGone is set when the core bdev was hot-removed from under the
	// started vbdev, until v starts again, is deleted or fails: v waits,
	// still a member of its cache instance (which keeps running and keeps
	// the cache bdev claimed), and the cache keeps the core detached with
	// its lines, dirty ones included. dirtyKept is the core's dirty data
	// then, in bytes; it cannot change while the core is detached.
	coreGone  bool
	dirtyKept int64
}

// instance is a cache instance: one cache bdev, claimed once, shared by the
// vbdevs naming it. The engine cache is built when its first vbdev starts and
// stopped when the last one leaves.
type instance struct {
	name     string // cache bdev name
	claim    *bdev.Claim
	lineSize int64      // bytes; fixed by the first vbdev
	mode     ocf.Mode   // mode to start the engine with
	cache    *ocf.Cache // nil until a member starts
	members  []*Vbdev
}

// Manager owns a daemon's OCF vbdevs. It reacts to registry events
// (examine: waiting vbdevs start when their bases appear) and hot-removes.
//
// mu serialises every management operation. Registry events and hot-remove
// callbacks become actions queued on the manager: run at once when the lock
// is free, else by the holder before it lets go. The holder may be the very
// goroutine that caused them (registering a volume; unregistering a volume
// that another vbdev uses as its core), which is why they cannot wait for
// the lock.
type Manager struct {
	reg *bdev.Registry
	log *slog.Logger

	unsubscribe func()

	mu struct {
		sync.Mutex
		vbdevs    []*Vbdev // creation order
		instances map[string]*instance
	}
	qmu     sync.Mutex
	actions []func() // queued work to run under mu, guarded by qmu
}

// NewManager returns a manager over reg and subscribes it to reg's events.
func NewManager(reg *bdev.Registry, log *slog.Logger) *Manager {
	m := &Manager{reg: reg, log: log}
	m.mu.instances = make(map[string]*instance)
	m.unsubscribe = reg.Subscribe(m.onEvent)
	return m
}

// lock takes the management lock.
func (m *Manager) lock() { m.mu.Lock() }

// unlock runs the queued actions, then releases the lock. The recheck
// after Unlock catches an action queued after the last drain.
func (m *Manager) unlock() {
	for {
		m.drainLocked()
		m.mu.Unlock()
		m.qmu.Lock()
		pending := len(m.actions) > 0
		m.qmu.Unlock()
		if !pending || !m.mu.TryLock() {
			return
		}
	}
}

// enqueue queues an action to run under mu and runs it now if the lock is
// free.
func (m *Manager) enqueue(action func()) {
	m.qmu.Lock()
	m.actions = append(m.actions, action)
	m.qmu.Unlock()
	if m.mu.TryLock() {
		m.unlock()
	}
}

func (m *Manager) onEvent(ev bdev.Event) {
	if ev.Kind != bdev.EventAdded {
		return // removals reach us through the claims' hot-remove callbacks
	}
	m.enqueue(func() { m.bdevAddedLocked(ev) })
}

// drainLocked runs the queued actions, including those they queue.
func (m *Manager) drainLocked() {
	for {
		m.qmu.Lock()
		actions := m.actions
		m.actions = nil
		m.qmu.Unlock()
		if len(actions) == 0 {
			return
		}
		for _, a := range actions {
			a()
		}
	}
}

// bdevAddedLocked is examine: any vbdev waiting for the new bdev attaches it
// and starts if it can; a bdev no vbdev names is probed for cache metadata.
//
// A failed vbdev retries only when the new bdev is one of its own bases (the
// operator re-created it, presumably repaired), not on every addition.
func (m *Manager) bdevAddedLocked(ev bdev.Event) {
	// Any addition may complete several waiting vbdevs (a shared cache);
	// attach everything that can be attached now.
	known := false
	for _, v := range m.mu.vbdevs {
		names := v.params.CacheBdev == ev.Name || v.params.CoreBdev == ev.Name
		known = known || names
		switch v.state() {
		case StateStarted:
		case StateFailed:
			if names {
				m.log.Info("a base of a failed OCF vbdev was added: retrying its start", "vbdev", v.params.Name, "bdev", ev.Name)
				m.startLocked(v) //nolint:errcheck // logged, and kept as v.failed
			}
		default:
			m.startLocked(v) //nolint:errcheck // logged, and kept as v.failed
		}
	}
	if !known {
		m.examineLocked(ev)
	}
}

// startLocked is tryStartLocked for a vbdev that stays whatever happens: a
// failure releases what the attempt attached and leaves v failed, with the
// error as its reason, logged. A force in v's params is spent by a start
// that got as far as failing: a later retry must ask for it again.
func (m *Manager) startLocked(v *Vbdev) error {
	v.failed = nil
	err := m.tryStartLocked(v)
	if err == nil {
		if v.core != nil && v.coreGone {
			v.coreGone, v.dirtyKept = false, 0
			m.log.Info("core bdev back: OCF vbdev started again with the data its cache kept", "vbdev", v.params.Name, "core", v.params.CoreBdev)
		}
		return nil
	}
	if derr := m.detachLocked(v, false); derr != nil {
		err = errors.Join(err, derr)
	}
	v.failed = err
	v.params.Force = false
	m.log.Error("OCF vbdev failed to start; it is kept, failed, until deleted or retried", "vbdev", v.params.Name,
		"cache", v.params.CacheBdev, "core", v.params.CoreBdev, "err", err)
	return err
}

// coreHolderLocked returns the vbdev other than self that holds core bdev
// name, or nil: one that claimed it, or a failed one, which keeps its core
// reserved while it holds no claim (see Info.State).
func (m *Manager) coreHolderLocked(name string, self *Vbdev) *Vbdev {
	for _, o := range m.mu.vbdevs {
		if o != self && o.params.CoreBdev == name && (o.coreClaim != nil || o.failed != nil) {
			return o
		}
	}
	return nil
}

// startCoreWaitersLocked starts, in creation order, the vbdevs that wait for
// core bdev name because another vbdev held it, once that one let go of it.
func (m *Manager) startCoreWaitersLocked(name string) {
	for _, v := range m.mu.vbdevs {
		if v.params.CoreBdev == name && v.state() == StateWaiting {
			m.startLocked(v) //nolint:errcheck // logged, and kept as v.failed
		}
	}
}

// Close unsubscribes the manager from its registry.
func (m *Manager) Close() { m.unsubscribe() }

// Create adds a vbdev (bdev_ocf_create). Missing bases are not an error:
// the vbdev waits for them and starts when they appear. It returns an error
// wrapping ErrNameExists or ErrInvalidParam, or one from a failed start, in
// which case nothing remains of the vbdev.
//
// Naming a failed vbdev with its own cache and core retries its start with
// p's mode, line size and force; if that fails too, the vbdev stays failed
// as it was, with the new reason.
func (m *Manager) Create(p Params) (*Vbdev, error) {
	return m.create(p, false)
}

// Restore adds a vbdev from a start-up config. It is Create, except that a
// start that fails keeps the vbdev, failed (StateFailed), with the error as
// its reason, and returns it with that error: the volume's definition must
// survive a damaged cache, so that it stays in the config and can be
// repaired and retried. A vbdev that examine re-created from the cache's
// metadata and that already failed is adopted as it is.
func (m *Manager) Restore(p Params) (*Vbdev, error) {
	return m.create(p, true)
}

func (m *Manager) create(p Params, keepFailed bool) (*Vbdev, error) {
	mode, err := ocf.ParseMode(p.Mode)
	if err != nil {
		return nil, fmt.Errorf("create OCF vbdev %q: %w: %w", p.Name, ErrInvalidParam, err)
	}
	lineSize := int64(p.LineSizeKiB) * 1024
	if p.LineSizeKiB != 0 && !ocf.ValidLineSize(lineSize) {
		return nil, fmt.Errorf("create OCF vbdev %q: %w: cache line size %d KiB (want 4, 8, 16, 32 or 64)", p.Name, ErrInvalidParam, p.LineSizeKiB)
	}
	if p.Name == "" || p.CacheBdev == "" || p.CoreBdev == "" {
		return nil, fmt.Errorf("create OCF vbdev: %w: name, cache and core bdev names must not be empty", ErrInvalidParam)
	}
	m.lock()
	defer m.unlock()
	if v := m.findLocked(p.Name); v != nil && v.params.CacheBdev == p.CacheBdev && v.params.CoreBdev == p.CoreBdev {
		switch {
		case v.auto && (v.failed == nil || keepFailed):
			// Examine re-created it from the cache's metadata (a config
			// replayed over existing devices): the create adopts it.
			v.auto = false
			if v.failed != nil {
				return v, fmt.Errorf("create OCF vbdev %q: %w", p.Name, v.failed)
			}
			return v, nil
		case v.failed != nil && !keepFailed:
			v.auto = false
			return v, m.retryLocked(v, p, mode)
		}
	}
	if _, err := m.reg.Lookup(p.Name); err == nil || m.findLocked(p.Name) != nil {
		return nil, fmt.Errorf("create OCF vbdev %q: %w", p.Name, ErrNameExists)
	}
	// Several vbdevs may wait for the same missing core, as in SPDK: the
	// first to be created claims it when it appears, the others wait on.
	if o := m.coreHolderLocked(p.CoreBdev, nil); o != nil {
		return nil, fmt.Errorf("create OCF vbdev %q: core bdev %q is already used by OCF vbdev %q: %w", p.Name, p.CoreBdev, o.params.Name, bdev.ErrDeviceClaimed)
	}
	if err := m.compatibleLocked(nil, p.CacheBdev, mode, lineSize, p.VolatileDirtyMetadata); err != nil {
		return nil, fmt.Errorf("create OCF vbdev %q: %w", p.Name, err)
	}
	v := &Vbdev{params: p, mode: mode, uuid: uuid.New()}
	m.mu.vbdevs = append(m.mu.vbdevs, v)
	if keepFailed {
		if err := m.startLocked(v); err != nil {
			return v, fmt.Errorf("create OCF vbdev %q: %w", p.Name, err)
		}
		return v, nil
	}
	if err := m.tryStartLocked(v); err != nil {
		m.detachLocked(v, false)
		m.mu.vbdevs = slices.DeleteFunc(m.mu.vbdevs, func(x *Vbdev) bool { return x == v })
		return nil, fmt.Errorf("create OCF vbdev %q: %w", p.Name, err)
	}
	return v, nil
}

// retryLocked starts the failed vbdev v again with the mode, line size and
// force of p (a bdev_ocf_create naming it). If the start fails, v keeps its
// former parameters and is failed with the new reason.
func (m *Manager) retryLocked(v *Vbdev, p Params, mode ocf.Mode) error {
	if err := m.compatibleLocked(v, p.CacheBdev, mode, int64(p.LineSizeKiB)*1024, p.VolatileDirtyMetadata); err != nil {
		return fmt.Errorf("create OCF vbdev %q: %w", p.Name, err)
	}
	oldParams, oldMode := v.params, v.mode
	v.params, v.mode = p, mode
	m.log.Info("retrying the start of a failed OCF vbdev", "vbdev", p.Name, "cache", p.CacheBdev, "core", p.CoreBdev, "force", p.Force)
	if err := m.startLocked(v); err != nil {
		v.params, v.mode = oldParams, oldMode
		return fmt.Errorf("create OCF vbdev %q: %w", p.Name, err)
	}
	return nil
}

// compatibleLocked checks a new vbdev's explicit mode, line size and
// volatile dirty metadata against the other vbdevs (other than self)
// naming the same cache bdev: they are per cache. Not asking for volatile
// dirty metadata takes the cache as it is.
func (m *Manager) compatibleLocked(self *Vbdev, cacheBdev string, mode ocf.Mode, lineSize int64, volatileDirty bool) error {
	for _, o := range m.mu.vbdevs {
		if o == self || o.params.CacheBdev != cacheBdev {
			continue
		}
		if cur := o.effectiveMode(); mode != cur {
			return fmt.Errorf("%w: cache %q runs in mode %s, not %s (the mode is per cache)", ErrInvalidParam, cacheBdev, cur, mode)
		}
		if cur := o.effectiveLineSize(); lineSize != 0 && lineSize != cur {
			return fmt.Errorf("%w: cache %q has %d KiB lines, not %d KiB", ErrInvalidParam, cacheBdev, cur/1024, lineSize/1024)
		}
		if volatileDirty && !o.effectiveVolatileDirty() {
			return fmt.Errorf("%w: cache %q keeps its dirty metadata durable; volatile_dirty_metadata is per cache and chosen when the cache is initialised", ErrInvalidParam, cacheBdev)
		}
	}
	return nil
}

// effectiveMode is the running cache's mode, or the requested one.
func (v *Vbdev) effectiveMode() ocf.Mode {
	if v.inst != nil && v.inst.cache != nil {
		return v.inst.cache.Mode()
	}
	return v.mode
}

// effectiveVolatileDirty is the running cache's choice of volatile dirty
// metadata, or the requested one.
func (v *Vbdev) effectiveVolatileDirty() bool {
	if v.inst != nil && v.inst.cache != nil {
		return v.inst.cache.VolatileDirtyMetadata()
	}
	return v.params.VolatileDirtyMetadata
}

// effectiveLineSize is the cache's line size in bytes, or the requested one
// (the default when none was asked for).
func (v *Vbdev) effectiveLineSize() int64 {
	if v.inst != nil {
		return v.inst.lineSize
	}
	if v.params.LineSizeKiB == 0 {
		return ocf.DefaultLineSize
	}
	return int64(v.params.LineSizeKiB) * 1024
}

func (m *Manager) findLocked(name string) *Vbdev {
	for _, v := range m.mu.vbdevs {
		if v.params.Name == name {
			return v
		}
	}
	return nil
}
