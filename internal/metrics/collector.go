package metrics

import (
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
)

// Collector is a prometheus.Collector over a Source: every scrape calls
// Gather and turns the snapshot into const metrics, so nothing is recorded
// per IO for Prometheus' sake.
type Collector struct {
	src Source
}

// NewCollector returns a Collector reading src.
func NewCollector(src Source) *Collector { return &Collector{src: src} }

var volumeLabels = []string{"volume", "cache", "core"}

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc("blockcache_"+name, help, labels, nil)
}

func withVolume(extra ...string) []string {
	return append(append([]string(nil), volumeLabels...), extra...)
}

// The metric families. docs/monitoring.md lists each with its labels.
var (
	descVolumeInfo = desc("volume_info", "A started OCF volume's configuration, as labels; always 1.",
		withVolume("mode", "line_size", "cleaning_policy", "promotion_policy", "seq_cutoff_policy")...)
	descVolumeState = desc("volume_state", "1 for the volume's lifecycle state (started, waiting, failed), 0 for the others.",
		withVolume("state")...)
	descVolumes = desc("volumes", "OCF volumes by lifecycle state.", "state")

	descRequests = desc("requests_total", "Requests served by the cache, by direction and result (hit, partial_miss, full_miss).",
		withVolume("direction", "result")...)
	descPassThrough = desc("pass_through_requests_total", "Requests that went around the cache, by direction and the first reason that applied.",
		withVolume("direction", "reason")...)
	descCoreBytes   = desc("core_bytes_total", "Bytes read from and written to the core device.", withVolume("direction")...)
	descCacheBytes  = desc("cache_bytes_total", "Bytes read from and written to the cache device for this volume.", withVolume("direction")...)
	descVolumeBytes = desc("volume_bytes_total", "Bytes the volume's clients read and wrote.", withVolume("direction")...)
	descErrors      = desc("device_errors_total", "Failed device IOs, by device (core, cache) and direction.", withVolume("device", "direction")...)
	descAbsorbed    = desc("absorbed_writes_total", "Writes to the core superseded by a later write of the same range while waiting for their order locks.", "cache")

	descOccupancy  = desc("occupancy_bytes", "Cache space holding the volume's data.", volumeLabels...)
	descDirty      = desc("dirty_bytes", "Cache space holding the volume's data not yet written to the core.", volumeLabels...)
	descClean      = desc("clean_bytes", "Cache space holding the volume's data also on the core.", volumeLabels...)
	descCacheFree  = desc("cache_free_bytes", "Free space in the cache.", "cache")
	descCacheSize  = desc("cache_size_bytes", "Cache capacity for data.", "cache")
	descFallbackPT = desc("cache_fallback_pass_through", "1 while the cache serves everything pass-through after too many cache-device errors.", "cache")

	descCleanedLines = desc("cleaned_lines_total", "Cache lines written back to the core (cleaner, flushes, misses making room).", volumeLabels...)
	descCleanedBytes = desc("cleaned_bytes_total", "Dirty bytes written back to the core.", volumeLabels...)
	descDirtyTarget  = desc("cleaner_dirty_ratio_target", "The dirty share of the cache above which the cleaner writes back at once (1: no target).", "cache")
	descBacklog      = desc("cleaner_backlog_bytes", "Dirty bytes above the dirty-ratio target: what the cleaner has yet to write back.", "cache")

	descFlushRunning   = desc("flush_in_progress", "1 while a background flush (bdev_ocf_flush_start) of the volume runs.", volumeLabels...)
	descFlushRemaining = desc("flush_remaining_bytes", "Bytes the running (or the last unfinished) flush has still to write back.", volumeLabels...)
	descFlushRate      = desc("flush_rate_bytes_per_second", "The running flush's write-back rate (of a finished flush: its average).", volumeLabels...)

	descVolumeLatency = desc("volume_request_duration_seconds", "Time the volume took per request, by op (read_hit, read_miss, write).",
		withVolume("op")...)

	descRemoteConnected  = desc("remote_core_connected", "1 while the volume's remote core is connected.", volumeLabels...)
	descRemoteReconnects = desc("remote_core_reconnects_total", "Times the volume's remote core connection was re-established.", volumeLabels...)

	descNBDConnections = desc("nbd_connections", "Open NBD connections, negotiating or in transmission.")
	descExportConns    = desc("nbd_export_connections", "NBD connections in transmission on the export.", "export")
	descExportInFlight = desc("nbd_requests_in_flight", "NBD requests the export's device is executing.", "export")
	descExportLatency  = desc("nbd_request_duration_seconds", "Device time per NBD request, by op (read, write, other).", "export", "op")
	allDescs           = []*prometheus.Desc{
		descVolumeInfo, descVolumeState, descVolumes, descRequests, descPassThrough, descCoreBytes, descCacheBytes,
		descVolumeBytes, descErrors, descAbsorbed, descOccupancy, descDirty, descClean, descCacheFree, descCacheSize, descFallbackPT,
		descCleanedLines, descCleanedBytes, descDirtyTarget, descBacklog, descFlushRunning, descFlushRemaining, descFlushRate,
		descVolumeLatency, descRemoteConnected, descRemoteReconnects,
		descNBDConnections, descExportConns, descExportInFlight, descExportLatency,
	}
)

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range allDescs {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	s := c.src.Gather()
	bounds := s.LatencyBoundsSeconds
	states := map[string]int{"started": 0, "waiting": 0, "failed": 0}
	caches := map[string]bool{}
	for _, v := range s.Volumes {
		states[v.State]++
		lv := []string{v.Name, v.Cache, v.Core}
		for _, st := range []string{"started", "waiting", "failed"} {
			ch <- gauge(descVolumeState, b2f(v.State == st), append(lv, st)...)
		}
		if v.Config == nil {
			continue
		}
		collectVolume(ch, v, lv, bounds)
		if !caches[v.Cache] {
			caches[v.Cache] = true
			ch <- gauge(descCacheFree, float64(v.Usage.CacheFreeBytes), v.Cache)
			ch <- gauge(descCacheSize, float64(v.Usage.CacheSizeBytes), v.Cache)
			ch <- gauge(descFallbackPT, b2f(v.Config.FallbackPT), v.Cache)
			ch <- gauge(descDirtyTarget, v.Cleaner.DirtyRatioTarget, v.Cache)
			ch <- gauge(descBacklog, float64(v.Cleaner.BacklogBytes), v.Cache)
			ch <- counter(descAbsorbed, v.Requests.CacheAbsorbedWrites, v.Cache)
		}
	}
	for st, n := range states {
		ch <- gauge(descVolumes, float64(n), st)
	}
	ch <- gauge(descNBDConnections, float64(s.NBDConnections))
	for _, e := range s.Exports {
		ch <- gauge(descExportConns, float64(e.Connections), e.Name)
		ch <- gauge(descExportInFlight, float64(e.InFlight), e.Name)
		ops := make([]string, 0, len(e.Latency))
		for op := range e.Latency {
			ops = append(ops, op)
		}
		sort.Strings(ops)
		for _, op := range ops {
			ch <- histogram(descExportLatency, e.Latency[op], bounds, e.Name, op)
		}
	}
}

func collectVolume(ch chan<- prometheus.Metric, v Volume, lv []string, bounds []float64) {
	cfg := v.Config
	ch <- gauge(descVolumeInfo, 1, append(lv, cfg.Mode, strconv.FormatInt(cfg.LineSizeBytes, 10), cfg.CleaningPolicy, cfg.PromotionPolicy, cfg.SeqCutoffPolicy)...)

	r := v.Requests
	for _, x := range []struct {
		dir, result string
		n           uint64
	}{
		{"read", "hit", r.ReadHits}, {"read", "partial_miss", r.ReadPartialMisses}, {"read", "full_miss", r.ReadFullMisses},
		{"write", "hit", r.WriteHits}, {"write", "partial_miss", r.WritePartialMisses}, {"write", "full_miss", r.WriteFullMisses},
	} {
		ch <- counter(descRequests, x.n, append(lv, x.dir, x.result)...)
	}
	for _, dir := range []struct {
		name string
		by   map[string]uint64
	}{{"read", r.ReadPassThrough}, {"write", r.WritePassThrough}} {
		for reason, n := range dir.by {
			ch <- counter(descPassThrough, n, append(lv, dir.name, reason)...)
		}
	}
	b := v.Bytes
	ch <- counter(descCoreBytes, b.CoreRead, append(lv, "read")...)
	ch <- counter(descCoreBytes, b.CoreWrite, append(lv, "write")...)
	ch <- counter(descCacheBytes, b.CacheRead, append(lv, "read")...)
	ch <- counter(descCacheBytes, b.CacheWrite, append(lv, "write")...)
	ch <- counter(descVolumeBytes, b.VolumeRead, append(lv, "read")...)
	ch <- counter(descVolumeBytes, b.VolumeWrite, append(lv, "write")...)
	e := v.Errors
	ch <- counter(descErrors, e.CoreRead, append(lv, "core", "read")...)
	ch <- counter(descErrors, e.CoreWrite, append(lv, "core", "write")...)
	ch <- counter(descErrors, e.CacheRead, append(lv, "cache", "read")...)
	ch <- counter(descErrors, e.CacheWrite, append(lv, "cache", "write")...)

	u := v.Usage
	ch <- gauge(descOccupancy, float64(u.OccupancyBytes), lv...)
	ch <- gauge(descDirty, float64(u.DirtyBytes), lv...)
	ch <- gauge(descClean, float64(u.CleanBytes), lv...)
	ch <- counter(descCleanedLines, v.Cleaner.CleanedLines, lv...)
	ch <- counter(descCleanedBytes, v.Cleaner.CleanedBytes, lv...)

	f := v.Flush
	ch <- gauge(descFlushRunning, b2f(f.InProgress), lv...)
	ch <- gauge(descFlushRemaining, float64(f.RemainingBytes), lv...)
	ch <- gauge(descFlushRate, f.BytesPerSecond, lv...)

	l := v.Latency
	ch <- histogram(descVolumeLatency, l.ReadHit, bounds, append(lv, "read_hit")...)
	ch <- histogram(descVolumeLatency, l.ReadMiss, bounds, append(lv, "read_miss")...)
	ch <- histogram(descVolumeLatency, l.Write, bounds, append(lv, "write")...)

	if v.Remote != nil {
		ch <- gauge(descRemoteConnected, b2f(v.Remote.Connected), lv...)
		ch <- counter(descRemoteReconnects, v.Remote.Reconnects, lv...)
	}
}

func gauge(d *prometheus.Desc, v float64, labels ...string) prometheus.Metric {
	return constMetric(d, prometheus.GaugeValue, v, labels)
}

func counter(d *prometheus.Desc, v uint64, labels ...string) prometheus.Metric {
	return constMetric(d, prometheus.CounterValue, float64(v), labels)
}

func constMetric(d *prometheus.Desc, t prometheus.ValueType, v float64, labels []string) prometheus.Metric {
	m, err := prometheus.NewConstMetric(d, t, v, validLabels(labels)...)
	if err != nil {
		return prometheus.NewInvalidMetric(d, err)
	}
	return m
}

// histogram maps h into a Prometheus histogram: cumulative counts per
// bound, the overflow bucket only in the total count.
func histogram(d *prometheus.Desc, h Histogram, bounds []float64, labels ...string) prometheus.Metric {
	buckets := make(map[float64]uint64, len(bounds))
	var cum, total uint64
	for i, n := range h.Counts {
		total += n
		if i < len(bounds) {
			cum += n
			buckets[bounds[i]] = cum
		}
	}
	m, err := prometheus.NewConstHistogram(d, total, h.SumSeconds, buckets, validLabels(labels)...)
	if err != nil {
		return prometheus.NewInvalidMetric(d, err)
	}
	return m
}

// validLabels makes label values valid UTF-8, as Prometheus requires: a
// bdev name from an INI config may be any bytes.
func validLabels(labels []string) []string {
	for i, l := range labels {
		if !utf8.ValidString(l) {
			labels[i] = strings.ToValidUTF8(l, "\uFFFD")
		}
	}
	return labels
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
