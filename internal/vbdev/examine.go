package vbdev

import (
	"errors"

	"blockcache/internal/bdev"
	"blockcache/internal/ocf"
	"blockcache/internal/ocf/metadata"
)

// examineLocked probes a newly added bdev that no vbdev names for cache
// metadata, as SPDK's OCF vbdev does in vbdev_ocf_examine_disk. When it holds a
// cache, a vbdev is re-created for every core the metadata records (with
// the recorded volume name), to start by loading the cache as soon as its
// core appears: no RPC is needed to bring a persistent cache back.
func (m *Manager) examineLocked(ev bdev.Event) {
	in := ev.Device.Info()
	if in.ProductName == ProductName || in.BlockSize != 512 {
		return // our own volumes, and devices that cannot be caches
	}
	if _, claimed := m.reg.ClaimOwner(ev.Name); claimed {
		return
	}
	sb, err := ocf.Probe(ev.Device)
	switch {
	case errors.Is(err, metadata.ErrNoMetadata):
		return
	case err != nil:
		m.log.Warn("examine: bdev holds damaged cache metadata; not loading it", "bdev", ev.Name, "err", err)
		return
	}
	mode := ocf.Mode(sb.Mode).String()
	for _, r := range sb.Cores {
		if m.findLocked(r.VolumeName) != nil {
			continue
		}
		if _, err := m.reg.Lookup(r.VolumeName); err == nil {
			m.log.Warn("examine: a bdev already has the recorded volume name; not re-creating it", "cache", ev.Name, "volume", r.VolumeName)
			continue
		}
		v := &Vbdev{params: Params{Name: r.VolumeName, Mode: mode, LineSizeKiB: uint64(sb.Geometry.LineSize / 1024),
			CacheBdev: ev.Name, CoreBdev: r.CoreName}, uuid: r.VolumeUUID, auto: true}
		v.mode, _ = ocf.ParseMode(mode)
		m.mu.vbdevs = append(m.mu.vbdevs, v)
		m.log.Info("examine: cache metadata found; OCF vbdev re-created, waiting for its core", "cache", ev.Name, "vbdev", r.VolumeName, "core", r.CoreName, "mode", mode)
		m.startLocked(v) //nolint:errcheck // logged, and kept as v.failed
	}
}
