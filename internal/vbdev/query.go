package vbdev

import (
	"fmt"

	"blockcache/internal/ocf"
)

// Info describes a vbdev as bdev_ocf_get_bdevs shows it.
type Info struct {
	Name string
	// State is started, waiting or failed; Started is State == StateStarted.
	State   State
	Started bool
	// Err is why the last start failed, when State is StateFailed.
	Err error
	// CoreRemoved is true when the core bdev was hot-removed from under
	// the started vbdev and has not come back: the cache keeps the core's
	// data (DirtyKeptBytes of it dirty) and the vbdev starts again when a
	// bdev of the core's name appears.
	CoreRemoved    bool
	DirtyKeptBytes int64

	CacheBdev     string
	CacheAttached bool
	CoreBdev      string
	CoreAttached  bool
	// Mode and LineSizeKiB are the cache's when started, else as requested
	// (LineSizeKiB 0 if the default was asked for).
	Mode        string
	LineSizeKiB uint64
	// MetadataVolatile is true when the cache keeps its metadata in memory
	// only (never, today: blockcache always persists it).
	MetadataVolatile bool
	// VolatileDirtyMetadata is true when the cache's changes of dirty
	// state are durable at flush or FUA only: the cache's when started,
	// else as requested.
	VolatileDirtyMetadata bool
	// FallbackPT is true when the cache fell back to pass-through after
	// FallbackPTThreshold cache-device errors (0: never falls back).
	FallbackPT          bool
	FallbackPTThreshold uint32
}

func (v *Vbdev) info() Info {
	in := Info{
		Name:           v.params.Name,
		State:          v.state(),
		Started:        v.core != nil,
		Err:            v.failed,
		CoreRemoved:    v.coreGone,
		DirtyKeptBytes: v.dirtyKept,
		CacheBdev:      v.params.CacheBdev,
		CacheAttached:  v.inst != nil,
		CoreBdev:       v.params.CoreBdev,
		CoreAttached:   v.coreClaim != nil,
		Mode:           v.effectiveMode().String(),
		LineSizeKiB:    uint64(v.effectiveLineSize() / 1024),

		VolatileDirtyMetadata: v.effectiveVolatileDirty(),
	}
	if v.inst != nil && v.inst.cache != nil {
		in.MetadataVolatile = v.inst.cache.VolatileMetadata()
		in.FallbackPT, _ = v.inst.cache.FallbackPT()
		in.FallbackPTThreshold = v.inst.cache.FallbackPTThreshold()
	}
	return in
}

// List returns the vbdevs in creation order, started or not. A non-empty
// filter keeps those whose vbdev, cache or core name equals it.
func (m *Manager) List(filter string) []Info {
	m.lock()
	defer m.unlock()
	var out []Info
	for _, v := range m.mu.vbdevs {
		p := v.params
		if filter == "" || filter == p.Name || filter == p.CacheBdev || filter == p.CoreBdev {
			out = append(out, v.info())
		}
	}
	return out
}

// Get returns one vbdev's description.
func (m *Manager) Get(name string) (Info, error) {
	m.lock()
	defer m.unlock()
	v := m.findLocked(name)
	if v == nil {
		return Info{}, fmt.Errorf("OCF vbdev %q: %w", name, ErrNoSuchVbdev)
	}
	return v.info(), nil
}

// startedLocked returns the named started vbdev.
func (m *Manager) startedLocked(name string) (*Vbdev, error) {
	v := m.findLocked(name)
	if v == nil {
		return nil, fmt.Errorf("OCF vbdev %q: %w", name, ErrNoSuchVbdev)
	}
	switch v.state() {
	case StateFailed:
		return nil, fmt.Errorf("OCF vbdev %q: %w: its start failed: %v", name, ErrNotStarted, v.failed)
	case StateWaiting:
		if v.coreGone {
			return nil, fmt.Errorf("OCF vbdev %q: %w (its core bdev %q was removed; the cache keeps its data until it comes back)", name, ErrNotStarted, v.params.CoreBdev)
		}
		return nil, fmt.Errorf("OCF vbdev %q: %w (waiting for its cache or core bdev)", name, ErrNotStarted)
	}
	return v, nil
}

// Stats returns the statistics of a started vbdev's core.
func (m *Manager) Stats(name string) (ocf.Stats, error) {
	m.lock()
	defer m.unlock()
	v, err := m.startedLocked(name)
	if err != nil {
		return ocf.Stats{}, err
	}
	return v.core.Stats(), nil
}

// ResetStats zeroes a started vbdev's counters.
func (m *Manager) ResetStats(name string) error {
	m.lock()
	defer m.unlock()
	v, err := m.startedLocked(name)
	if err != nil {
		return err
	}
	v.core.ResetStats()
	return nil
}

// SetMode changes the mode of the cache a vbdev runs on (so of every vbdev
// sharing it). Leaving write-back does not write dirty data back; it stays
// readable and is cleaned later, as in OCF.
func (m *Manager) SetMode(name, mode string) (ocf.Mode, error) {
	md, err := ocf.ParseMode(mode)
	if err != nil {
		return 0, fmt.Errorf("set mode of OCF vbdev %q: %w: %w", name, ErrInvalidParam, err)
	}
	m.lock()
	defer m.unlock()
	v := m.findLocked(name)
	if v == nil {
		return 0, fmt.Errorf("OCF vbdev %q: %w", name, ErrNoSuchVbdev)
	}
	if v.inst != nil && v.inst.cache != nil {
		if err := v.inst.cache.SetMode(md, false); err != nil {
			return 0, fmt.Errorf("OCF vbdev %q: %w", name, err)
		}
	}
	// Waiting vbdevs on the same cache start in the new mode too.
	for _, o := range m.mu.vbdevs {
		if o.params.CacheBdev == v.params.CacheBdev {
			o.mode = md
			if o.inst != nil {
				o.inst.mode = md
			}
		}
	}
	m.log.Info("cache mode changed", "vbdev", name, "cache", v.params.CacheBdev, "mode", md.String())
	return md, nil
}

// CreateParams returns the parameters that re-create each started vbdev
// with its current mode and line size, in creation order, for
// framework_get_config.
func (m *Manager) CreateParams() []Params {
	m.lock()
	defer m.unlock()
	var out []Params
	for _, v := range m.mu.vbdevs {
		if v.core == nil {
			continue
		}
		p := v.params
		p.Mode = v.effectiveMode().String()
		p.LineSizeKiB = uint64(v.effectiveLineSize() / 1024)
		p.VolatileDirtyMetadata = v.effectiveVolatileDirty()
		out = append(out, p)
	}
	return out
}

// SetFallbackPT sets the number of cache-device errors after which the
// cache a vbdev runs on falls back to pass-through (0: never), leaving a
// fallback in force.
func (m *Manager) SetFallbackPT(name string, threshold uint32) error {
	m.lock()
	defer m.unlock()
	v, err := m.startedLocked(name)
	if err != nil {
		return err
	}
	if err := v.inst.cache.SetFallbackPTThreshold(threshold); err != nil {
		return policyError(name, err)
	}
	return nil
}
