package metrics

import (
	"time"

	"blockcache/internal/latency"
)

// Snapshot is every number the daemon exports, read at one moment: what
// /metrics serves in Prometheus' format and blockcache_get_metrics in
// JSON. Counters count from the volume's (or export's) start and never go
// down; bdev_ocf_reset_stats does not touch them.
type Snapshot struct {
	// Time is when the snapshot was taken (Unix nanoseconds), for rates.
	Time int64 `json:"time_unix_nano"`
	// LatencyBoundsSeconds are the histograms' bucket upper bounds; each
	// histogram's counts have one more entry, for longer durations.
	LatencyBoundsSeconds []float64 `json:"latency_bounds_seconds"`
	Volumes              []Volume  `json:"volumes"`
	Exports              []Export  `json:"nbd_exports"`
	// NBDConnections is the number of open NBD connections, negotiating
	// or in transmission.
	NBDConnections int `json:"nbd_connections"`
}

// Volume is one OCF vbdev. Only Name, Cache, Core, State and Reason are
// set unless it is started.
type Volume struct {
	Name  string `json:"name"`
	Cache string `json:"cache"`
	Core  string `json:"core"`
	// State is started, waiting or failed; Reason says why it failed.
	State  string `json:"state"`
	Reason string `json:"reason,omitempty"`

	Config   *VolumeConfig  `json:"config,omitempty"`
	Requests *Requests      `json:"requests,omitempty"`
	Bytes    *Bytes         `json:"bytes,omitempty"`
	Errors   *Errors        `json:"errors,omitempty"`
	Usage    *Usage         `json:"usage,omitempty"`
	Cleaner  *Cleaner       `json:"cleaner,omitempty"`
	Flush    *Flush         `json:"flush,omitempty"`
	Latency  *VolumeLatency `json:"latency,omitempty"`
	// Remote is set when the core device reaches its data over a network
	// connection (it implements RemoteCore).
	Remote *Remote `json:"remote,omitempty"`
}

// VolumeConfig is what the info metric carries as labels.
type VolumeConfig struct {
	Mode            string `json:"mode"`
	LineSizeBytes   int64  `json:"line_size_bytes"`
	CleaningPolicy  string `json:"cleaning_policy"`
	PromotionPolicy string `json:"promotion_policy"`
	SeqCutoffPolicy string `json:"seq_cutoff_policy"`
	// FallbackPT is true while the cache serves pass-through after too
	// many cache-device errors.
	FallbackPT bool `json:"fallback_pass_through"`
}

// Requests counts requests: served ones by result, pass-through ones by
// reason (see ocf.PTReason for the names and their precedence), and the
// cache's absorbed writes.
type Requests struct {
	ReadHits           uint64            `json:"read_hits"`
	ReadPartialMisses  uint64            `json:"read_partial_misses"`
	ReadFullMisses     uint64            `json:"read_full_misses"`
	WriteHits          uint64            `json:"write_hits"`
	WritePartialMisses uint64            `json:"write_partial_misses"`
	WriteFullMisses    uint64            `json:"write_full_misses"`
	ReadPassThrough    map[string]uint64 `json:"read_pass_through"`
	WritePassThrough   map[string]uint64 `json:"write_pass_through"`
	// CacheAbsorbedWrites is cache-wide, shared by the volumes on the
	// cache (ocf.Cache.AbsorbedWrites): writes superseded by a later write
	// of the same range while they waited for their order locks. They are
	// also in the counts above, as the write that superseded them.
	CacheAbsorbedWrites uint64 `json:"cache_absorbed_writes"`
}

// Bytes is traffic: the core and cache devices' IO and what the clients
// read and wrote.
type Bytes struct {
	CoreRead    uint64 `json:"core_read"`
	CoreWrite   uint64 `json:"core_write"`
	CacheRead   uint64 `json:"cache_read"`
	CacheWrite  uint64 `json:"cache_write"`
	VolumeRead  uint64 `json:"volume_read"`
	VolumeWrite uint64 `json:"volume_write"`
}

// Errors counts failed device IOs.
type Errors struct {
	CoreRead   uint64 `json:"core_read"`
	CoreWrite  uint64 `json:"core_write"`
	CacheRead  uint64 `json:"cache_read"`
	CacheWrite uint64 `json:"cache_write"`
}

// Usage is the volume's share of the cache, and the cache's size and free
// space (shared by the volumes on it), in bytes.
type Usage struct {
	OccupancyBytes uint64 `json:"occupancy_bytes"`
	DirtyBytes     uint64 `json:"dirty_bytes"`
	CleanBytes     uint64 `json:"clean_bytes"`
	CacheFreeBytes uint64 `json:"cache_free_bytes"`
	CacheSizeBytes uint64 `json:"cache_size_bytes"`
}

// Cleaner is write-back progress: what cleaning wrote back for the volume,
// and the cache's dirty-ratio target and backlog above it.
type Cleaner struct {
	CleanedLines uint64 `json:"cleaned_lines"`
	CleanedBytes uint64 `json:"cleaned_bytes"`
	// DirtyRatioTarget is alru's max_dirty_ratio as a fraction (1: no
	// target); BacklogBytes the dirty bytes above it, cache-wide.
	DirtyRatioTarget float64 `json:"dirty_ratio_target"`
	BacklogBytes     int64   `json:"backlog_bytes"`
}

// Flush is the volume's background flush (bdev_ocf_flush_start), running
// or last run.
type Flush struct {
	InProgress     bool    `json:"in_progress"`
	DoneLines      int     `json:"done_lines"`
	TotalLines     int     `json:"total_lines"`
	RemainingBytes int64   `json:"remaining_bytes"`
	BytesPerSecond float64 `json:"bytes_per_second"`
}

// VolumeLatency are a volume's latency histograms.
type VolumeLatency struct {
	ReadHit  Histogram `json:"read_hit"`
	ReadMiss Histogram `json:"read_miss"`
	Write    Histogram `json:"write"`
}

// Histogram is a latency histogram: Counts[i] durations of at most
// LatencyBoundsSeconds[i] and above the bound before; the last entry
// counts those beyond every bound.
type Histogram struct {
	Counts     []uint64 `json:"counts"`
	SumSeconds float64  `json:"sum_seconds"`
}

// Remote is the connection state of a core reached over the network.
type Remote struct {
	Connected  bool   `json:"connected"`
	Reconnects uint64 `json:"reconnects"`
}

// Export is one NBD export.
type Export struct {
	Name        string `json:"name"`
	Connections int    `json:"connections"`
	// InFlight is the number of its requests the device is executing.
	InFlight int64 `json:"in_flight"`
	// Latency is the device time per request, by op: read, write, other.
	Latency map[string]Histogram `json:"latency"`
}

// histogramOf converts a latency snapshot.
func histogramOf(s latency.Snapshot) Histogram {
	return Histogram{Counts: append([]uint64(nil), s.Counts[:]...), SumSeconds: s.Sum.Seconds()}
}

// Latency converts h back into a latency snapshot; counts beyond the
// package's buckets are taken as overflow.
func (h Histogram) Latency() latency.Snapshot {
	var s latency.Snapshot
	for i, n := range h.Counts {
		s.Counts[min(i, latency.NumBuckets)] += n
	}
	s.Sum = time.Duration(h.SumSeconds * float64(time.Second))
	return s
}

// boundsSeconds returns the histograms' bucket bounds in seconds.
func boundsSeconds() []float64 {
	b := make([]float64, latency.NumBuckets)
	for i := range b {
		b[i] = latency.Bound(i).Seconds()
	}
	return b
}
