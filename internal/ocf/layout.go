package ocf

import (
	"fmt"
	"math/bits"
)

// Line sizes the engine supports, in bytes.
const (
	MinLineSize     = 4 << 10
	MaxLineSize     = 64 << 10
	DefaultLineSize = 4 << 10
)

const (
	sectorSize = 512
	// superblockArea is reserved at the start of the cache device for the
	// superblock copies (see the metadata format).
	superblockArea = 8 << 10
	// entryBytes is the on-disk size of one line's metadata entry.
	entryBytes = 16
	// metaAlign aligns the data area, so O_DIRECT IO to lines stays aligned.
	metaAlign = 4 << 10
)

// ValidLineSize reports whether n bytes is a supported cache line size.
func ValidLineSize(n int64) bool {
	return n >= MinLineSize && n <= MaxLineSize && n&(n-1) == 0
}

// layout is where metadata and data live on a cache device of a given size.
type layout struct {
	lineSize   int64
	lineShift  uint8 // log2(lineSize)
	numLines   int
	dataOffset int64 // byte offset of line 0's data
}

// computeLayout splits a cache device of devBytes into a metadata area
// (superblocks, then one entry per line) and a data area of whole lines.
func computeLayout(devBytes, lineSize int64) (layout, error) {
	if !ValidLineSize(lineSize) {
		return layout{}, fmt.Errorf("cache line size %d bytes: %w (want 4, 8, 16, 32 or 64 KiB)", lineSize, ErrInvalidConfig)
	}
	alignUp := func(n int64) int64 { return (n + metaAlign - 1) / metaAlign * metaAlign }
	// Start from the most lines that could fit and shrink until the entries
	// and the lines both fit.
	n := (devBytes - superblockArea) / (lineSize + entryBytes)
	for ; n > 0; n-- {
		off := alignUp(superblockArea + n*entryBytes)
		if off+n*lineSize <= devBytes {
			if n > 1<<31-1 {
				n = 1<<31 - 1
			}
			return layout{lineSize: lineSize, lineShift: uint8(bits.TrailingZeros64(uint64(lineSize))), numLines: int(n), dataOffset: off}, nil
		}
	}
	return layout{}, fmt.Errorf("cache device of %d bytes holds no %d-byte line after metadata: %w", devBytes, lineSize, ErrCacheTooSmall)
}

// lineOffset is the byte offset of sector s of line i on the cache device.
func (l *layout) lineOffset(i lineIdx, s int) int64 {
	return l.dataOffset + int64(i)*l.lineSize + int64(s)*sectorSize
}
