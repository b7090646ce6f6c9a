package vbdev

import (
	"time"

	"blockcache/internal/bdev"
	"blockcache/internal/ocf"
)

// Observed is a vbdev as monitoring sees it: its names, its state and,
// while started, the engine objects whose statistics it reads.
type Observed struct {
	Name, CacheBdev, CoreBdev string
	State                     State
	// Err is why the last start failed, when State is StateFailed.
	Err error
	// Core and Cache are set while the vbdev is started.
	Core  *ocf.Core
	Cache *ocf.Cache
	// CoreDevice is the core bdev's device while the vbdev is started.
	CoreDevice bdev.Device
	// Flush is the vbdev's background flush (bdev_ocf_flush_start), the
	// running or the last one; zero if none ran.
	Flush FlushStatus
}

// Observe returns every vbdev, in creation order. The engine objects stay
// readable after the vbdev is deleted: their counters simply stop.
func (m *Manager) Observe() []Observed {
	m.lock()
	defer m.unlock()
	out := make([]Observed, 0, len(m.mu.vbdevs))
	for _, v := range m.mu.vbdevs {
		o := Observed{Name: v.params.Name, CacheBdev: v.params.CacheBdev, CoreBdev: v.params.CoreBdev, State: v.state(), Err: v.failed}
		if v.core != nil {
			o.Core, o.Cache, o.CoreDevice = v.core, v.inst.cache, v.coreClaim.Device()
		}
		if v.flush != nil {
			o.Flush = v.flush.status(time.Now())
		}
		out = append(out, o)
	}
	return out
}
