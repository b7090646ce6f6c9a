package ocf

import (
	"sync"
	"sync/atomic"
)

// counters are one core's request, traffic and error statistics. They are
// updated with atomics on the data path and never go down: ResetStats
// moves the baseline that Stats subtracts. Usage (occupancy, dirty) lives
// in Core under Cache.mu instead.
type counters struct {
	// Requests, reads and writes, by class (the hit path's reads are in
	// Core's shards instead).
	rd, wr reqCounts

	// Lines and bytes written back to the core by cleaning (the cleaner,
	// flushes and misses making room).
	cleanedLines, cleanedBytes atomic.Uint64

	// Traffic in bytes.
	coreRdBytes, coreWrBytes     atomic.Uint64
	cacheRdBytes, cacheWrBytes   atomic.Uint64
	volumeRdBytes, volumeWrBytes atomic.Uint64

	// Failed requests, by the device that failed.
	coreRdErrors, coreWrErrors   atomic.Uint64
	cacheRdErrors, cacheWrErrors atomic.Uint64

	// hits counts the reads served by the hit path (hit.go), apart from
	// the counters above: sharded by stripe, so that CPUs hitting
	// different lines do not write the same CPU cache line. Allocated on
	// its own (newCounters), which aligns it to its size: a shard never
	// straddles two CPU cache lines.
	hits *[hitShards]hitCounter

	// baseline is the Counters at the last ResetStats, which Stats
	// subtracts.
	baseline struct {
		sync.Mutex
		at Counters
	}
}

func newCounters() counters { return counters{hits: new([hitShards]hitCounter)} }

const hitShards = 32

// hitCounter is one shard of the hit path's counters: read hits and their
// bytes (volume and cache traffic alike), alone on a 64-byte line. Hits of
// 4 KiB, the common case, are counted apart, with one atomic add.
type hitCounter struct {
	reads4K, reads, bytes atomic.Uint64
	_                     [64 - 24]byte
}

// countHit counts a read hit of n bytes served by the hit path. With delta
// -1 it takes back such a count.
func (c *counters) countHit(stripe int, n uint64, delta int64) {
	h := &c.hits[stripe&(hitShards-1)]
	if n == 4096 {
		h.reads4K.Add(uint64(delta))
		return
	}
	h.reads.Add(uint64(delta))
	h.bytes.Add(uint64(delta) * n)
}

// hitTotals returns the hit path's reads and bytes, summed over the shards.
// A lock-free hit that failed its check takes its count back (see
// readHit); the shards are summed as signed numbers so that a sum read
// between another shard's add and take-back can never wrap.
func (c *counters) hitTotals() (reads, bytes uint64) {
	var r, b int64
	for i := range c.hits {
		h := &c.hits[i]
		r4 := int64(h.reads4K.Load())
		r += r4 + int64(h.reads.Load())
		b += 4096*r4 + int64(h.bytes.Load())
	}
	return uint64(max(r, 0)), uint64(max(b, 0))
}

// reset makes the current counts Stats' zero; the counts themselves go on.
func (c *counters) reset() {
	now := c.load()
	c.baseline.Lock()
	c.baseline.at = now
	c.baseline.Unlock()
}

// sinceReset returns the counts since the last reset.
func (c *counters) sinceReset() Counters {
	now := c.load()
	c.baseline.Lock()
	base := c.baseline.at
	c.baseline.Unlock()
	return now.Sub(base)
}

// reqClass is how a request is counted, following OCF's classification.
type reqClass uint8

const (
	classHit reqClass = iota
	classPartialMiss
	classFullMiss
	classPT // pass-through: counted in total only
	numReqClasses
)

// reqCounts count the requests of one direction by class, and the
// pass-through ones again by reason.
type reqCounts struct {
	byClass [numReqClasses]atomic.Uint64
	ptBy    [NumPTReasons]atomic.Uint64
}

// total is the number of requests counted.
func (d *reqCounts) total() uint64 {
	var n uint64
	for i := range d.byClass {
		n += d.byClass[i].Load()
	}
	return n
}

// requests is the number of reads and writes counted, the hit path's
// aside.
func (c *counters) requests() uint64 { return c.rd.total() + c.wr.total() }

// Stats is a snapshot of statistics for one core or a whole cache, in the
// units SPDK's bdev_ocf_get_stats reports: usage and blocks in 4 KiB blocks,
// requests and errors as request counts.
type Stats struct {
	Usage    UsageStats
	Requests RequestStats
	Blocks   BlockStats
	Errors   ErrorStats
	// CacheSize4K is the cache's capacity in 4 KiB blocks, the base of the
	// usage percentages.
	CacheSize4K uint64
	// FallbackPT is true while the cache serves pass-through after too
	// many cache-device errors.
	FallbackPT bool
}

// UsageStats is cache occupancy in 4 KiB blocks (whole lines counted).
type UsageStats struct{ Occupancy, Free, Clean, Dirty uint64 }

// RequestStats counts requests. Pass-through requests count in Total only.
type RequestStats struct {
	RdHits, RdPartialMisses, RdFullMisses, RdTotal uint64
	WrHits, WrPartialMisses, WrFullMisses, WrTotal uint64
	RdPT, WrPT, Serviced, Total                    uint64
}

// BlockStats is traffic in 4 KiB blocks, rounded up from bytes.
type BlockStats struct {
	CoreRd, CoreWr, CoreTotal       uint64
	CacheRd, CacheWr, CacheTotal    uint64
	VolumeRd, VolumeWr, VolumeTotal uint64
}

// ErrorStats counts failed device IOs.
type ErrorStats struct {
	CoreRd, CoreWr, CoreTotal    uint64
	CacheRd, CacheWr, CacheTotal uint64
	Total                        uint64
}

func blocks4K(bytes uint64) uint64 { return (bytes + 4095) / 4096 }

// addTo adds c's counters since the last reset into s.
func (c *counters) addTo(s *Stats) {
	n := c.sinceReset()
	r := &s.Requests
	r.RdHits += n.ReadHits
	r.RdPartialMisses += n.ReadPartialMisses
	r.RdFullMisses += n.ReadFullMisses
	r.RdPT += n.ReadPT
	r.WrHits += n.WriteHits
	r.WrPartialMisses += n.WritePartialMisses
	r.WrFullMisses += n.WriteFullMisses
	r.WrPT += n.WritePT
	r.RdTotal = r.RdHits + r.RdPartialMisses + r.RdFullMisses
	r.WrTotal = r.WrHits + r.WrPartialMisses + r.WrFullMisses
	r.Serviced = r.RdTotal + r.WrTotal
	r.Total = r.Serviced + r.RdPT + r.WrPT

	b := &s.Blocks
	b.CoreRd += blocks4K(n.CoreReadBytes)
	b.CoreWr += blocks4K(n.CoreWriteBytes)
	b.CacheRd += blocks4K(n.CacheReadBytes)
	b.CacheWr += blocks4K(n.CacheWriteBytes)
	b.VolumeRd += blocks4K(n.VolumeReadBytes)
	b.VolumeWr += blocks4K(n.VolumeWriteBytes)
	b.CoreTotal = b.CoreRd + b.CoreWr
	b.CacheTotal = b.CacheRd + b.CacheWr
	b.VolumeTotal = b.VolumeRd + b.VolumeWr

	e := &s.Errors
	e.CoreRd += n.CoreReadErrors
	e.CoreWr += n.CoreWriteErrors
	e.CacheRd += n.CacheReadErrors
	e.CacheWr += n.CacheWriteErrors
	e.CoreTotal = e.CoreRd + e.CoreWr
	e.CacheTotal = e.CacheRd + e.CacheWr
	e.Total = e.CoreTotal + e.CacheTotal
}

// fillUsage sets s's usage from line counts, in 4 KiB blocks.
func (c *Cache) fillUsage(s *Stats, occupied, dirty, free int) {
	per4K := uint64(c.layout.lineSize / 4096)
	s.Usage = UsageStats{
		Occupancy: uint64(occupied) * per4K,
		Free:      uint64(free) * per4K,
		Clean:     uint64(occupied-dirty) * per4K,
		Dirty:     uint64(dirty) * per4K,
	}
	s.CacheSize4K = uint64(c.layout.numLines) * per4K
	s.FallbackPT = c.fallback.active.Load()
}

// Stats returns the cache-wide statistics: the sum over its cores.
func (c *Cache) Stats() Stats {
	var s Stats
	c.mu.Lock()
	occupied := c.occupiedLocked()
	dirty, free := c.mu.lists[listDirty].n, c.layout.numLines-occupied
	cores := make([]*Core, 0, len(c.mu.cores))
	for _, co := range c.mu.cores {
		cores = append(cores, co)
	}
	c.mu.Unlock()
	for _, co := range cores {
		co.stats.addTo(&s)
	}
	c.fillUsage(&s, occupied, dirty, free)
	return s
}
