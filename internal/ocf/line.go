package ocf

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

// line is the in-memory metadata of one cache line. All fields are guarded by
// Cache.mu. The valid and dirty masks of a mapped line change only while its
// core line's stripe lock is held exclusively (readers may add valid bits under
// a shared stripe lock, writing data identical to the core's).
//
// Whoever holds the stripe of a line's core line, shared or exclusive, may
// use the line's data: eviction takes only lines whose stripe it can
// TryLock, so a line with IO in flight is never evicted.
//
// Invariants (checked by Cache.Check): dirty ⊆ valid; a mapped line is on the
// clean list iff dirty is empty. A mapped line may have no valid sector for a
// while (allocated, its fill not yet done or failed); it is evicted first.
type line struct {
	valid    sectorMask // sectors holding current data
	dirty    sectorMask // sectors newer than the core's copy
	coreLine uint32     // line number within the core (offset / lineSize)
	hashNext lineIdx    // next line in the same mapping bucket
	prev     lineIdx    // neighbours on the list named by list
	next     lineIdx
	// dirtySince is when the line last became dirty, in seconds since the
	// cache started (for alru's staleness).
	dirtySince uint32
	core       CoreID
	list       listID
	// durableDirty is true while the line's entry on the cache device
	// claims dirty sectors. Such a line is never given to another core
	// line: after a crash, recovery would take the new data for the old
	// core line's. Set by syncMetadata from what it wrote.
	durableDirty bool
}

// mapped reports whether the line holds a core line.
func (l *line) mapped() bool { return l.list == listClean || l.list == listDirty }
