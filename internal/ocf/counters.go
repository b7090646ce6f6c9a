package ocf

import "blockcache/internal/latency"

// Counters are a volume's statistics since its core was attached, in
// requests and bytes. They never go down (ResetStats does not touch them),
// which is what a metrics scraper computing rates needs; Stats is the
// resettable view in SPDK's units.
type Counters struct {
	ReadHits, ReadPartialMisses, ReadFullMisses    uint64
	WriteHits, WritePartialMisses, WriteFullMisses uint64
	// ReadPT and WritePT count pass-through requests; ReadPTBy and
	// WritePTBy split them by reason (they sum to ReadPT and WritePT).
	ReadPT, WritePT     uint64
	ReadPTBy, WritePTBy [NumPTReasons]uint64

	// Bytes moved: core and cache device IO (cleaning included), and
	// what the volume's clients read and wrote.
	CoreReadBytes, CoreWriteBytes     uint64
	CacheReadBytes, CacheWriteBytes   uint64
	VolumeReadBytes, VolumeWriteBytes uint64

	// Failed device IOs, by device and direction.
	CoreReadErrors, CoreWriteErrors   uint64
	CacheReadErrors, CacheWriteErrors uint64

	// CleanedLines and CleanedBytes are what cleaning wrote back to the
	// core: the cleaner, flushes and misses making room alike.
	CleanedLines, CleanedBytes uint64
}

// Sub returns the counts from base to n (n taken later).
func (n Counters) Sub(base Counters) Counters {
	sub := func(a *uint64, b uint64) { *a -= min(*a, b) }
	for _, p := range []struct {
		a *uint64
		b uint64
	}{
		{&n.ReadHits, base.ReadHits}, {&n.ReadPartialMisses, base.ReadPartialMisses}, {&n.ReadFullMisses, base.ReadFullMisses},
		{&n.WriteHits, base.WriteHits}, {&n.WritePartialMisses, base.WritePartialMisses}, {&n.WriteFullMisses, base.WriteFullMisses},
		{&n.ReadPT, base.ReadPT}, {&n.WritePT, base.WritePT},
		{&n.CoreReadBytes, base.CoreReadBytes}, {&n.CoreWriteBytes, base.CoreWriteBytes},
		{&n.CacheReadBytes, base.CacheReadBytes}, {&n.CacheWriteBytes, base.CacheWriteBytes},
		{&n.VolumeReadBytes, base.VolumeReadBytes}, {&n.VolumeWriteBytes, base.VolumeWriteBytes},
		{&n.CoreReadErrors, base.CoreReadErrors}, {&n.CoreWriteErrors, base.CoreWriteErrors},
		{&n.CacheReadErrors, base.CacheReadErrors}, {&n.CacheWriteErrors, base.CacheWriteErrors},
		{&n.CleanedLines, base.CleanedLines}, {&n.CleanedBytes, base.CleanedBytes},
	} {
		sub(p.a, p.b)
	}
	for i := range n.ReadPTBy {
		sub(&n.ReadPTBy[i], base.ReadPTBy[i])
		sub(&n.WritePTBy[i], base.WritePTBy[i])
	}
	return n
}

// load reads every counter, the hit path's shards summed in.
func (c *counters) load() Counters {
	hitReads, hitBytes := c.hitTotals()
	n := Counters{
		ReadHits: c.rd.byClass[classHit].Load() + hitReads, ReadPartialMisses: c.rd.byClass[classPartialMiss].Load(),
		ReadFullMisses: c.rd.byClass[classFullMiss].Load(), ReadPT: c.rd.byClass[classPT].Load(),
		WriteHits: c.wr.byClass[classHit].Load(), WritePartialMisses: c.wr.byClass[classPartialMiss].Load(),
		WriteFullMisses: c.wr.byClass[classFullMiss].Load(), WritePT: c.wr.byClass[classPT].Load(),

		CoreReadBytes: c.coreRdBytes.Load(), CoreWriteBytes: c.coreWrBytes.Load(),
		CacheReadBytes: c.cacheRdBytes.Load() + hitBytes, CacheWriteBytes: c.cacheWrBytes.Load(),
		VolumeReadBytes: c.volumeRdBytes.Load() + hitBytes, VolumeWriteBytes: c.volumeWrBytes.Load(),

		CoreReadErrors: c.coreRdErrors.Load(), CoreWriteErrors: c.coreWrErrors.Load(),
		CacheReadErrors: c.cacheRdErrors.Load(), CacheWriteErrors: c.cacheWrErrors.Load(),

		CleanedLines: c.cleanedLines.Load(), CleanedBytes: c.cleanedBytes.Load(),
	}
	for i := range n.ReadPTBy {
		n.ReadPTBy[i] = c.rd.ptBy[i].Load()
		n.WritePTBy[i] = c.wr.ptBy[i].Load()
	}
	return n
}

// Counters returns the volume's counters since its core was attached.
func (co *Core) Counters() Counters { return co.stats.load() }

// countRead counts r as a read of class cl; a pass-through one also under
// r.ptWhy.
func (r *request) countRead(cl reqClass) { r.count(&r.co.stats.rd, cl) }

// countWrite counts r as a write of class cl; a pass-through one also
// under r.ptWhy.
func (r *request) countWrite(cl reqClass) { r.count(&r.co.stats.wr, cl) }

func (r *request) count(d *reqCounts, cl reqClass) {
	r.class, r.counted = cl, true
	d.byClass[cl].Add(1)
	if cl == classPT {
		d.ptBy[ptReason(r.ptWhy)].Add(1)
	}
}

// volumeLatency are a volume's latency histograms, recorded at its IO
// entry points (ReadAt, TryReadAt, WriteAt), whatever the outcome.
type volumeLatency struct {
	// readHit counts reads served wholly from the cache, sharded by core
	// line as the hit counters are (a hit in memory takes ~100 ns: CPUs
	// sharing one histogram would slow each other down); readMiss every
	// other read (partial and full misses, pass-through).
	readHit  latency.Sharded
	readMiss latency.Histogram
	write    latency.Histogram
}

// readDone records a read counted as cl, of core line coreLine on, that
// started at start.
func (l *volumeLatency) readDone(cl reqClass, coreLine uint64, start latency.Stamp) {
	if cl == classHit {
		l.readHit.Since(coreLine, start)
		return
	}
	l.readMiss.Since(start)
}

// Latency is a snapshot of a volume's latency histograms.
type Latency struct {
	ReadHit, ReadMiss, Write latency.Snapshot
}

// Latency returns the volume's latency histograms since its core was
// attached.
func (co *Core) Latency() Latency {
	return Latency{ReadHit: co.lat.readHit.Snapshot(), ReadMiss: co.lat.readMiss.Snapshot(), Write: co.lat.write.Snapshot()}
}

// CleanerBacklog returns how many dirty bytes the cache holds above its
// cleaning policy's dirty-ratio target (alru's MaxDirtyRatio; 0 with no
// target or another policy): what the cleaner has yet to write back to
// get under it.
func (c *Cache) CleanerBacklog() int64 {
	p := c.Cleaning()
	if p.Kind != CleanALRU {
		return 0
	}
	return int64(c.dirtyOverTarget(p.ALRU.MaxDirtyRatio)) * c.layout.lineSize
}
