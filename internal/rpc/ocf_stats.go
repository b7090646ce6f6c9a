package rpc

import (
	"fmt"

	"blockcache/internal/ocf"
)

// statEntry is one leaf of bdev_ocf_get_stats.
type statEntry struct {
	Count      uint64 `json:"count"`
	Percentage string `json:"percentage"`
	Units      string `json:"units"`
}

// percentage prints count/total the way SPDK's stats.c does: the fraction
// in hundredths of a percent, printed as "%lu.%lu" of its quotient and
// remainder by 100, so 12.05% prints as "12.5" and nothing prints as "0.0".
func percentage(count, total uint64) string {
	var f uint64
	if total != 0 {
		f = count * 10000 / total
	}
	return fmt.Sprintf("%d.%d", f/100, f%100)
}

func entry(count, total uint64, units string) statEntry {
	return statEntry{Count: count, Percentage: percentage(count, total), Units: units}
}

const (
	units4K       = "4KiB blocks"
	unitsRequests = "Requests"
)

type usageObject struct {
	Occupancy statEntry `json:"occupancy"`
	Free      statEntry `json:"free"`
	Clean     statEntry `json:"clean"`
	Dirty     statEntry `json:"dirty"`
}

type requestsObject struct {
	RdHits          statEntry `json:"rd_hits"`
	RdPartialMisses statEntry `json:"rd_partial_misses"`
	RdFullMisses    statEntry `json:"rd_full_misses"`
	RdTotal         statEntry `json:"rd_total"`
	WrHits          statEntry `json:"wr_hits"`
	WrPartialMisses statEntry `json:"wr_partial_misses"`
	WrFullMisses    statEntry `json:"wr_full_misses"`
	WrTotal         statEntry `json:"wr_total"`
	RdPT            statEntry `json:"rd_pt"`
	WrPT            statEntry `json:"wr_pt"`
	Serviced        statEntry `json:"serviced"`
	Total           statEntry `json:"total"`
}

type blocksObject struct {
	CoreVolumeRd     statEntry `json:"core_volume_rd"`
	CoreVolumeWr     statEntry `json:"core_volume_wr"`
	CoreVolumeTotal  statEntry `json:"core_volume_total"`
	CacheVolumeRd    statEntry `json:"cache_volume_rd"`
	CacheVolumeWr    statEntry `json:"cache_volume_wr"`
	CacheVolumeTotal statEntry `json:"cache_volume_total"`
	VolumeRd         statEntry `json:"volume_rd"`
	VolumeWr         statEntry `json:"volume_wr"`
	VolumeTotal      statEntry `json:"volume_total"`
}

type errorsObject struct {
	CoreVolumeRd     statEntry `json:"core_volume_rd"`
	CoreVolumeWr     statEntry `json:"core_volume_wr"`
	CoreVolumeTotal  statEntry `json:"core_volume_total"`
	CacheVolumeRd    statEntry `json:"cache_volume_rd"`
	CacheVolumeWr    statEntry `json:"cache_volume_wr"`
	CacheVolumeTotal statEntry `json:"cache_volume_total"`
	Total            statEntry `json:"total"`
}

// StatsObject is bdev_ocf_get_stats' result, keys in SPDK's order.
type StatsObject struct {
	Usage    usageObject    `json:"usage"`
	Requests requestsObject `json:"requests"`
	Blocks   blocksObject   `json:"blocks"`
	Errors   errorsObject   `json:"errors"`
}

// statsObject renders s. Usage percentages are of the cache size, request
// percentages of all requests, traffic percentages of each device's total,
// error percentages of all errors.
func statsObject(s ocf.Stats) StatsObject {
	u, r, b, e := s.Usage, s.Requests, s.Blocks, s.Errors
	size := s.CacheSize4K
	req := func(n uint64) statEntry { return entry(n, r.Total, unitsRequests) }
	return StatsObject{
		Usage: usageObject{
			Occupancy: entry(u.Occupancy, size, units4K),
			Free:      entry(u.Free, size, units4K),
			Clean:     entry(u.Clean, size, units4K),
			Dirty:     entry(u.Dirty, size, units4K),
		},
		Requests: requestsObject{
			RdHits: req(r.RdHits), RdPartialMisses: req(r.RdPartialMisses), RdFullMisses: req(r.RdFullMisses), RdTotal: req(r.RdTotal),
			WrHits: req(r.WrHits), WrPartialMisses: req(r.WrPartialMisses), WrFullMisses: req(r.WrFullMisses), WrTotal: req(r.WrTotal),
			RdPT: req(r.RdPT), WrPT: req(r.WrPT), Serviced: req(r.Serviced), Total: req(r.Total),
		},
		Blocks: blocksObject{
			CoreVolumeRd: entry(b.CoreRd, b.CoreTotal, units4K), CoreVolumeWr: entry(b.CoreWr, b.CoreTotal, units4K), CoreVolumeTotal: entry(b.CoreTotal, b.CoreTotal, units4K),
			CacheVolumeRd: entry(b.CacheRd, b.CacheTotal, units4K), CacheVolumeWr: entry(b.CacheWr, b.CacheTotal, units4K), CacheVolumeTotal: entry(b.CacheTotal, b.CacheTotal, units4K),
			VolumeRd: entry(b.VolumeRd, b.VolumeTotal, units4K), VolumeWr: entry(b.VolumeWr, b.VolumeTotal, units4K), VolumeTotal: entry(b.VolumeTotal, b.VolumeTotal, units4K),
		},
		Errors: errorsObject{
			CoreVolumeRd: entry(e.CoreRd, e.Total, unitsRequests), CoreVolumeWr: entry(e.CoreWr, e.Total, unitsRequests), CoreVolumeTotal: entry(e.CoreTotal, e.Total, unitsRequests),
			CacheVolumeRd: entry(e.CacheRd, e.Total, unitsRequests), CacheVolumeWr: entry(e.CacheWr, e.Total, unitsRequests), CacheVolumeTotal: entry(e.CacheTotal, e.Total, unitsRequests),
			Total: entry(e.Total, e.Total, unitsRequests),
		},
	}
}
