// Package metrics reads the daemon's statistics, the OCF volumes' and the
// NBD exports', at the moment they are asked for: for Prometheus
// (Collector, Handler) and for blockcache_get_metrics (Gather). It only
// reads counters the engine and the NBD server keep anyway; the data path
// knows nothing of it.
package metrics

import (
	"time"

	"blockcache/internal/bdev"
	"blockcache/internal/bdev/nbdremote"
	"blockcache/internal/nbd"
	"blockcache/internal/ocf"
	"blockcache/internal/vbdev"
)

// Source is what the numbers are read from. Either field may be nil.
type Source struct {
	OCF *vbdev.Manager
	NBD *nbd.Server
}

// RemoteCore is implemented by core devices that reach their data over a
// network connection; their volumes then report its state. It is the hook
// for remote cores; the NBD client bdev (nbdremote) is read through its
// Status instead.
type RemoteCore interface {
	// RemoteState reports whether the connection is up and how many times
	// it was re-established.
	RemoteState() (connected bool, reconnects uint64)
}

// Gather reads every number now.
func (src Source) Gather() Snapshot {
	s := Snapshot{Time: time.Now().UnixNano(), LatencyBoundsSeconds: boundsSeconds(), Volumes: []Volume{}, Exports: []Export{}}
	if src.OCF != nil {
		for _, o := range src.OCF.Observe() {
			s.Volumes = append(s.Volumes, volumeOf(o))
		}
	}
	if src.NBD != nil {
		for _, e := range src.NBD.ExportStats() {
			ex := Export{Name: e.Name, Connections: e.Connections, InFlight: e.Executing, Latency: map[string]Histogram{}}
			for _, op := range nbd.ExportOps() {
				ex.Latency[op.String()] = histogramOf(e.Latency[op])
			}
			s.Exports = append(s.Exports, ex)
		}
		s.NBDConnections = src.NBD.Connections()
	}
	return s
}

func volumeOf(o vbdev.Observed) Volume {
	v := Volume{Name: o.Name, Cache: o.CacheBdev, Core: o.CoreBdev, State: o.State.String()}
	if o.Err != nil {
		v.Reason = o.Err.Error()
	}
	if o.Core == nil || o.Cache == nil {
		return v
	}
	co, c := o.Core, o.Cache
	clean := c.Cleaning()
	v.Config = &VolumeConfig{
		Mode:            c.Mode().String(),
		LineSizeBytes:   c.LineSize(),
		CleaningPolicy:  clean.Kind.String(),
		PromotionPolicy: c.Promotion().Kind.String(),
		SeqCutoffPolicy: co.SeqCutoff().Policy.String(),
	}
	v.Config.FallbackPT, _ = c.FallbackPT()

	n := co.Counters()
	v.Requests = &Requests{
		ReadHits: n.ReadHits, ReadPartialMisses: n.ReadPartialMisses, ReadFullMisses: n.ReadFullMisses,
		WriteHits: n.WriteHits, WritePartialMisses: n.WritePartialMisses, WriteFullMisses: n.WriteFullMisses,
		ReadPassThrough: map[string]uint64{}, WritePassThrough: map[string]uint64{},
		CacheAbsorbedWrites: c.AbsorbedWrites(),
	}
	for r := range ocf.NumPTReasons {
		v.Requests.ReadPassThrough[r.String()] = n.ReadPTBy[r]
		v.Requests.WritePassThrough[r.String()] = n.WritePTBy[r]
	}
	v.Bytes = &Bytes{
		CoreRead: n.CoreReadBytes, CoreWrite: n.CoreWriteBytes,
		CacheRead: n.CacheReadBytes, CacheWrite: n.CacheWriteBytes,
		VolumeRead: n.VolumeReadBytes, VolumeWrite: n.VolumeWriteBytes,
	}
	v.Errors = &Errors{CoreRead: n.CoreReadErrors, CoreWrite: n.CoreWriteErrors, CacheRead: n.CacheReadErrors, CacheWrite: n.CacheWriteErrors}

	u := co.Stats()
	v.Usage = &Usage{
		OccupancyBytes: 4096 * u.Usage.Occupancy, DirtyBytes: 4096 * u.Usage.Dirty, CleanBytes: 4096 * u.Usage.Clean,
		CacheFreeBytes: 4096 * u.Usage.Free, CacheSizeBytes: 4096 * u.CacheSize4K,
	}
	target := 1.0
	if clean.Kind == ocf.CleanALRU {
		target = float64(clean.ALRU.MaxDirtyRatio) / 100
	}
	v.Cleaner = &Cleaner{CleanedLines: n.CleanedLines, CleanedBytes: n.CleanedBytes, DirtyRatioTarget: target, BacklogBytes: c.CleanerBacklog()}
	f := o.Flush
	v.Flush = &Flush{InProgress: f.InProgress, DoneLines: f.Done, TotalLines: f.Total, RemainingBytes: f.RemainingBytes, BytesPerSecond: f.BytesPerSec}
	l := co.Latency()
	v.Latency = &VolumeLatency{ReadHit: histogramOf(l.ReadHit), ReadMiss: histogramOf(l.ReadMiss), Write: histogramOf(l.Write)}
	v.Remote = remoteOf(o.CoreDevice)
	return v
}

// remoteOf returns the connection state of a core device reached over the
// network: one implementing RemoteCore, or an NBD client bdev; nil for any
// other.
func remoteOf(dev bdev.Device) *Remote {
	switch d := dev.(type) {
	case RemoteCore:
		up, n := d.RemoteState()
		return &Remote{Connected: up, Reconnects: n}
	case *nbdremote.Device:
		st := d.Status()
		return &Remote{Connected: st.State == nbdremote.StateConnected, Reconnects: st.Reconnects}
	}
	return nil
}
