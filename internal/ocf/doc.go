// Package ocf is the cache engine: a fast cache device in front of one or
// more slow core devices, with the semantics of Open CAS (OCF), the library
// under SPDK's OCF vbdev: the six cache modes (wt, wb, wa, wi, pt, wo),
// cache lines of 4 to 64 KiB tracked in 512-byte sectors, LRU eviction,
// promotion (always, nhit), sequential cutoff, cleaning (alru, acp, nop),
// statistics, and metadata on the cache device that survives a crash. It
// knows nothing of NBD, JSON or the bdev registry: package vbdev builds
// cached volumes from it. docs/engine.md describes the behaviour and where
// it differs from OCF; docs/durability.md the metadata and crash recovery.
//
// # Main types
//
//   - Cache: one cache device and its in-memory state (cache.go); made by
//     New (a fresh cache) or Load (the cache a device holds). Management
//     operations are its methods: AddCore, RemoveCore, SetMode, Flush,
//     the policy setters (SetCleaning, SetPromotion, Core.SetSeqCutoff),
//     Stop.
//   - Core: a core device attached to a cache, and the cached volume on
//     it, a bdev.Device whose IO goes through the cache (core.go).
//   - request: the engine's view of one volume IO, the core lines it
//     touches, their cache lines and mask snapshots (request.go); it lives
//     on the caller's stack.
//   - line, lines: a cache line's metadata (valid and dirty sector masks,
//     key, LRU links; line.go) and the state changes made to lines under
//     Cache.mu (lines.go), on the free, clean, dirty and limbo lists
//     (lru.go).
//   - mapping: the hash table from (core, core line) to cache line, read
//     lock-free by the hit path (mapping.go, hit.go).
//   - stripes: the data-path locks, one per group of core lines
//     (stripes.go).
//   - the cleaner: the background write-back of dirty lines under the
//     cleaning policy (cleaner.go), using the batches of clean.go.
//   - package ocf/metadata: the on-disk format, pure encoding and
//     validation, no IO; persist.go, commit.go and load.go do the IO.
//   - package ocf/recovery: reads damaged metadata without trusting it and
//     writes the dirty data it still describes back to the cores (the
//     offline `blockcache recover`).
//
// # Lock order
//
// From outermost to innermost:
//
//  1. Cache.mgmt, the management lock: one of AddCore, RemoveCore, Flush
//     (and FlushDirty) and Stop at a time. cleanerState.step, which
//     serialises the cleaner's steps, is taken at this level too: before
//     any stripe.
//  2. The stripes of a request's core lines: each stripe's order lock, in
//     ascending stripe order, then the RW locks, in ascending order
//     (shared for reads, which skip the order locks). A write keeps its
//     order locks and lets go of the RW locks across its core write.
//     Eviction only TryLocks a victim's stripe, so it never waits.
//  3. persistState.sync, which serialises metadata writes.
//  4. Cache.mu, which guards the line lists, the cores, and what has
//     changed in the metadata. It is never held while waiting for a
//     stripe, and never across device IO: work under it is memory only.
//
// The other locks are leaves, held for a few memory operations and taking
// no other lock: cleanerState.mu and promotionHolder.mu (a policy's
// parameters), NHit.mu and seqDetector.mu (a policy's state),
// commitState.mu (writers meeting for a group commit), the statistics
// baseline. The hit path
// (hit.go) takes no lock at all when the stripe's sequence count vouches
// for its read; which fields it may so read is said at line and at
// Cache.mu.
//
// # Files
//
//	doc.go          this overview
//	cache.go        Cache, New, AddCore, RemoveCore, SetMode, Stop
//	core.go         Core: the volume's bdev.Device methods (Flush among
//	                them), its attach state
//	io.go           the data path: read, write and discard, by mode
//	hit.go          the lock-free read hit
//	request.go      request: lookup, allocation, mask updates
//	line.go lines.go lru.go mapping.go mask.go
//	                line metadata, its changes, the lists, the hash table,
//	                sector masks
//	stripes.go      the data-path locks
//	absorb.go       write absorption: a waiting write superseded by a later one
//	                of the same range
//	evict.go        making room when every line is dirty or in use
//	clean.go        write-back batches; cleaner.go the background cleaner
//	                and the alru, acp and nop policies
//	flush.go        Flush, the management write-back
//	promotion.go seqcutoff.go policy.go param.go
//	                promotion, sequential cutoff, their parameters and checks
//	mode.go passthrough.go fallback.go
//	                cache modes, pass-through reasons, fallback pass-through
//	persist.go commit.go load.go layout.go
//	                metadata writes, group commit, Load and Probe, where
//	                things are on the device
//	settings.go     changeRecorded, recordOrUndo: a setting's change (or
//	                AddCore's), its superblock write, and its undoing when
//	                the write fails
//	check.go        Check, the metadata consistency walk
//	stats.go counters.go memory.go
//	                statistics, per-volume counters, memory needed
//	errors.go       the sentinel errors
//
// # Where to start reading
//
// Read cache.go for the Cache's fields and their guards, then core.go and
// io.go for one read and one write from the volume down, then request.go
// and lines.go for how lines are found and changed, then stripes.go and
// hit.go for the concurrency, and persist.go for what reaches the device
// and when. The model-based test (model_test.go) states the engine's
// contract against a flat reference.
package ocf
