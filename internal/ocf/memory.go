package ocf

import (
	"fmt"
	"unsafe"

	"blockcache/internal/ocf/metadata"
	"blockcache/internal/sysmem"
)

// In-memory cost of a cache, per cache line and fixed:
//
//	line           56 bytes      Cache.mu.lines: masks, key, links, since
//	mapping bucket 4-8 bytes     one int32 per line, rounded up to a power of two
//	nhit slot      16 bytes      the nhit promotion table, when that policy is chosen
//	entry bit      1/8 byte per entry sector  Cache.mu.metaDirty
//	stripes        64 bytes each, 64..4096 of them
//
// plus fixedOverhead for the rest of the Cache and its pools. Nothing else
// grows with the device: the acp dirtiness table has one entry per 100 MiB
// of dirty core, request scratch is per request.
const (
	lineBytes     = int64(unsafe.Sizeof(line{}))
	nhitSlotBytes = int64(unsafe.Sizeof(nhitSlot{}))
	stripeBytes   = int64(unsafe.Sizeof(stripeLock{}))
	// fixedOverhead covers the Cache struct, its maps, channels and pools
	// before any IO: a few KiB, rounded up.
	fixedOverhead = 64 << 10
)

// MemoryNeeded returns the bytes of memory a cache on a device of
// deviceBytes with lines of lineSize bytes holds for its metadata, whichever
// promotion policy it runs (the nhit table included, so that switching to
// nhit later cannot run the process out of memory), or 0 if the device
// holds no line of that size. New and Load refuse a cache that needs more
// than the machine can give (ENOMEM) before allocating any of it.
func MemoryNeeded(deviceBytes, lineSize int64) int64 {
	if !ValidLineSize(lineSize) {
		return 0
	}
	g := metadata.ComputeGeometry(deviceBytes, lineSize)
	if g.NumLines == 0 {
		return 0
	}
	return baseMemory(g) + nhitMemory(g.NumLines)
}

// baseMemory is what newCache allocates with the always promotion policy.
func baseMemory(g metadata.Geometry) int64 {
	n := g.NumLines
	buckets := int64(1)
	for buckets < n {
		buckets <<= 1
	}
	return n*lineBytes + buckets*4 + (g.EntrySectors+63)/64*8 + stripeCount(n)*stripeBytes + fixedOverhead
}

// nhitMemory is the nhit promotion table of a cache of numLines lines.
func nhitMemory(numLines int64) int64 { return max(numLines, 1024) * nhitSlotBytes }

// checkMemory refuses, before anything is allocated, a cache on a device
// of devBytes whose metadata needs more memory than mem says the process
// can get. The error says how much is needed, in SPDK's terms (device size,
// cache line size, memory needed), and wraps a *sysmem.ShortError (ENOMEM).
func checkMemory(mem sysmem.Probe, devBytes, lineSize int64) error {
	need := MemoryNeeded(devBytes, lineSize)
	if err := mem.Check(need); err != nil {
		return fmt.Errorf("not enough memory to start the cache in this configuration (device size: %d bytes, cache line size: %d bytes, memory needed: %d bytes; a larger cache line size needs less): %w",
			devBytes, lineSize, need, err)
	}
	return nil
}
