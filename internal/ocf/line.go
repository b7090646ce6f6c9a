package ocf

import "sync/atomic"

// lineIdx indexes a cache line: the line's metadata in Cache.lines and its
// data at dataOffset + lineIdx*lineSize on the cache device.
type lineIdx int32

// noLine marks the absence of a line in lists, chains and lookups.
const noLine lineIdx = -1

// CoreID identifies a core within its cache (0..MaxCores-1).
type CoreID uint16

// MaxCores is the number of cores one cache can hold, as in OCF.
const MaxCores = 4096

// listID names the list a line is on. Every line is on exactly one.
type listID uint8

const (
	listFree  listID = iota // unmapped; valid and dirty are empty
	listClean               // mapped, no dirty sector; LRU order, eviction candidates
	listDirty               // mapped, at least one dirty sector; LRU order
	listLimbo               // unmapped, but its durable entry still claims dirty data
	numLists
)

// line is the in-memory metadata of one cache line. Who may read each
// field, and how:
//
//   - key, valid and hashNext are read without any lock by the hit path
//     (hit.go) and by lookups under the stripe of the line's core line
//     (mapping.lookup), which is why they are atomics. They are written
//     under Cache.mu; the key of a mapped line and its valid mask change
//     only with that stripe held exclusively, except that a reader holding
//     it shared may add valid bits once the data they stand for is on the
//     cache device (and that data is what the core returned: the core's,
//     or, while a write to those sectors is in its core write, possibly
//     older; the write overwrites or drops it before it returns, io.go
//     writeCore). A lock-free read is
//     trusted only when the stripe's sequence count did not move around it
//     (stripeLock.readBegin, readValid). Writers hold Cache.mu, so a
//     writer's load-modify-store of the key cannot race with another
//     writer.
//   - since is an atomic too: the hit path and lookupFast set its
//     referenced flag without Cache.mu (reference); everything else reads
//     and writes it under Cache.mu.
//   - dirty is plain, written under Cache.mu; the dirty mask of a mapped
//     line changes only with its stripe held exclusively, so a holder of
//     that stripe reads it without Cache.mu (lookupFast, refresh), and
//     everyone else under Cache.mu.
//   - prev and next are plain, read and written under Cache.mu only.
//
// Whoever holds the stripe of a line's core line, shared or exclusive, may
// use the line's data: eviction takes only lines whose stripe it can
// TryLock, so a line with IO in flight is never evicted.
//
// Invariants (checked by Cache.Check): dirty ⊆ valid; a mapped line is on the
// clean list iff dirty is empty. A mapped line may have no valid sector for a
// while (allocated, its fill not yet done or failed); it is evicted first.
type line struct {
	valid [2]atomic.Uint64 // sectors holding current data (a sectorMask)
	dirty sectorMask       // sectors newer than the core's copy
	// key packs the core line (bits 0-31), the core (32-47), the list the
	// line is on (48-55) and durableDirty (bit 56): true while the line's
	// entry on the cache device claims dirty sectors. Such a line is never
	// given to another core line: after a crash, recovery would take the
	// new data for the old core line's. Set by syncMetadata from what it
	// wrote.
	key      atomic.Uint64
	hashNext atomic.Int32 // next line (a lineIdx) in the same mapping bucket
	prev     lineIdx      // neighbours on the list named by list
	next     lineIdx
	// since holds dirtySince, when the line last became dirty in seconds
	// since the cache started (for alru's staleness), and in its top bit
	// the referenced flag: set by a lock-free hit, it asks eviction for a
	// second chance (see allocLocked), which takes it (takeReferenced).
	since atomic.Uint32
}

const (
	keyLineMask    = 1<<32 - 1
	keyCoreShift   = 32
	keyIDMask      = 1<<48 - 1 // core and core line
	keyListShift   = 48
	keyDurableBit  = 1 << 56
	sinceReference = 1 << 31
)

// lineKey is the key bits of (core, coreLine).
func lineKey(core CoreID, coreLine uint32) uint64 {
	return uint64(coreLine) | uint64(core)<<keyCoreShift
}

func (l *line) core() CoreID       { return CoreID(l.key.Load() >> keyCoreShift) }
func (l *line) coreLine() uint32   { return uint32(l.key.Load() & keyLineMask) }
func (l *line) list() listID       { return listID(l.key.Load() >> keyListShift) }
func (l *line) durableDirty() bool { return l.key.Load()&keyDurableBit != 0 }

// setID maps the line to (core, coreLine), keeping its list and flag.
func (l *line) setID(core CoreID, coreLine uint32) {
	l.key.Store(l.key.Load()&^keyIDMask | lineKey(core, coreLine))
}

func (l *line) setList(id listID) {
	l.key.Store(l.key.Load()&^(0xFF<<keyListShift) | uint64(id)<<keyListShift)
}

func (l *line) setDurableDirty(d bool) {
	k := l.key.Load() &^ keyDurableBit
	if d {
		k |= keyDurableBit
	}
	l.key.Store(k)
}

// validMask returns the valid mask.
func (l *line) validMask() sectorMask { return sectorMask{l.valid[0].Load(), l.valid[1].Load()} }

// setValid stores the valid mask. Under a shared stripe lock it may only
// add bits, and only after the data they stand for is on the cache device.
func (l *line) setValid(m sectorMask) {
	l.valid[0].Store(m[0])
	l.valid[1].Store(m[1])
}

func (l *line) dirtySince() uint32 { return l.since.Load() &^ sinceReference }

// setDirtySince sets dirtySince and clears the referenced flag.
func (l *line) setDirtySince(s uint32) { l.since.Store(s &^ sinceReference) }

// takeReferenced clears the referenced flag and reports whether it was
// set. Callers hold Cache.mu; a concurrent reference may set it again.
func (l *line) takeReferenced() bool {
	s := l.since.Load()
	if s&sinceReference == 0 {
		return false
	}
	l.since.And(^uint32(sinceReference))
	return true
}

// reference sets the referenced flag; it writes only when the flag is
// clear, so a line hit over and over is not written at all.
func (l *line) reference() {
	if l.since.Load()&sinceReference == 0 {
		l.since.Or(sinceReference)
	}
}

// mapped reports whether the line holds a core line.
func (l *line) mapped() bool { id := l.list(); return id == listClean || id == listDirty }
