package ocf

import (
	"fmt"
	"math/bits"

	"blockcache/internal/ocf/metadata"
)

// Line sizes the engine supports, in bytes.
const (
	MinLineSize     = 4 << 10
	MaxLineSize     = 64 << 10
	DefaultLineSize = 4 << 10
)

const sectorSize = 512

// ValidLineSize reports whether n bytes is a supported cache line size.
func ValidLineSize(n int64) bool {
	return n >= MinLineSize && n <= MaxLineSize && n&(n-1) == 0
}

// DeviceBytesFor returns the smallest cache device size, in bytes, that
// holds lines cache lines of lineSize bytes with their metadata.
func DeviceBytesFor(lines int, lineSize int64) int64 {
	return metadata.DeviceBytesFor(int64(lines), lineSize)
}

// layout is where metadata and data live on a cache device of a given size
// (metadata.Geometry), with what the data path derives from it.
type layout struct {
	metadata.Geometry
	lineSize   int64
	lineShift  uint8 // log2(lineSize)
	numLines   int
	dataOffset int64 // byte offset of line 0's data
	perSector  int   // line entries per entry sector
}

// computeLayout splits a cache device of devBytes into the metadata area
// and a data area of whole lines.
func computeLayout(devBytes, lineSize int64) (layout, error) {
	if !ValidLineSize(lineSize) {
		return layout{}, fmt.Errorf("cache line size %d bytes: %w (want 4, 8, 16, 32 or 64 KiB)", lineSize, ErrInvalidConfig)
	}
	g := metadata.ComputeGeometry(devBytes, lineSize)
	if g.NumLines == 0 {
		return layout{}, fmt.Errorf("cache device of %d bytes holds no %d-byte line after metadata: %w", devBytes, lineSize, ErrCacheTooSmall)
	}
	if g.NumLines > 1<<31-1 {
		return layout{}, fmt.Errorf("cache device of %d bytes: %d lines is more than the engine indexes: %w", devBytes, g.NumLines, ErrInvalidConfig)
	}
	return layout{
		Geometry:   g,
		lineSize:   lineSize,
		lineShift:  uint8(bits.TrailingZeros64(uint64(lineSize))),
		numLines:   int(g.NumLines),
		dataOffset: g.DataOffset,
		perSector:  metadata.EntriesPerSector(g.SectorsPerLine()),
	}, nil
}

// lineOffset is the byte offset of sector s of line i on the cache device.
func (l *layout) lineOffset(i lineIdx, s int) int64 {
	return l.dataOffset + int64(i)*l.lineSize + int64(s)*sectorSize
}

// sectorOf is the entry sector holding line i's metadata.
func (l *layout) sectorOf(i lineIdx) int { return int(i) / l.perSector }
