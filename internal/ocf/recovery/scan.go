// Package recovery reads what is left of a cache's metadata without
// trusting it to be whole, and writes the dirty data it still describes
// back to the cores: the offline `blockcache recover`, in the spirit of
// dm-cache's cache_writeback. It also tells whether a device that holds no
// superblock is really blank (ScanTags), which the vbdev layer asks before
// initialising a cache over it.
//
// Nothing here writes to the cache device.
package recovery

import (
	"fmt"

	"blockcache/internal/bdev"
	"blockcache/internal/ocf/metadata"
)

// scanChunkBytes is how much of the entry area one read covers.
const scanChunkBytes = 1 << 20

// TagScan is what the entry area holds, read sector by sector: which
// sectors are intact entry sectors (checksum and index match) and whose.
type TagScan struct {
	// DevBytes is the device size.
	DevBytes int64
	// Sectors is how many sectors were scanned: the entry area of 4 KiB
	// lines, the largest of any line size.
	Sectors int64
	// Tags counts the intact sectors of each cache tag.
	Tags map[metadata.Tag]int64
	// Last is the highest intact sector index of each cache tag.
	Last map[metadata.Tag]int64
	// Unreadable counts sectors the device failed to read.
	Unreadable int64
}

// Dominant returns the tag most intact sectors carry and their count (0
// when no sector is intact).
func (s *TagScan) Dominant() (tag metadata.Tag, sectors int64) {
	for t, n := range s.Tags {
		if n > sectors || n == sectors && t < tag {
			tag, sectors = t, n
		}
	}
	return tag, sectors
}

// Tagged reports the number of intact entry sectors of any cache.
func (s *TagScan) Tagged() int64 {
	var n int64
	for _, c := range s.Tags {
		n += c
	}
	return n
}

// ScanTags reads the entry area of dev as a cache with 4 KiB lines would
// lay it out (every line size's entry area starts at the same offset and is
// no longer) and counts the intact entry sectors per cache tag. A blank
// device has none. Sectors the device fails to read are counted, not
// fatal. progress, if not nil, is told sectors done of total.
func ScanTags(dev bdev.Device, progress func(done, total int64)) *TagScan {
	info := dev.Info()
	s := &TagScan{DevBytes: info.SizeBytes(), Tags: map[metadata.Tag]int64{}, Last: map[metadata.Tag]int64{}}
	s.Sectors = metadata.ComputeGeometry(s.DevBytes, 4096).EntrySectors
	readEntryArea(dev, s.Sectors, progress, func(index int64, b []byte, err error) {
		if err != nil {
			s.Unreadable++
			return
		}
		if tag, ok := metadata.SectorTag(b, uint32(index)); ok {
			s.Tags[tag]++
			s.Last[tag] = max(s.Last[tag], index)
		}
	})
	return s
}

// readEntryArea reads entry sectors [0, sectors) of dev in chunks and
// calls fn on each with its index, or with the error that kept it from
// being read: a chunk that fails is read again block by block, so one bad
// block costs only its own sectors.
func readEntryArea(dev bdev.Device, sectors int64, progress func(done, total int64), fn func(index int64, b []byte, err error)) {
	const perChunk = scanChunkBytes / metadata.SectorBytes
	bs := int64(dev.Info().BlockSize)
	buf := make([]byte, scanChunkBytes+bs)
	for s := int64(0); s < sectors; s += perChunk {
		n := min(perChunk, sectors-s)
		off := metadata.SuperblockArea + s*metadata.SectorBytes
		// Whole device blocks: the entry area starts block aligned (128
		// KiB) and the data area follows it, so rounding up stays inside.
		length := (n*metadata.SectorBytes + bs - 1) / bs * bs
		if err := dev.ReadAt(buf[:length], off); err == nil {
			for j := range n {
				fn(s+j, buf[j*metadata.SectorBytes:(j+1)*metadata.SectorBytes], nil)
			}
		} else {
			for b := int64(0); b < length; b += bs {
				berr := dev.ReadAt(buf[b:b+bs], off+b)
				for j := b / metadata.SectorBytes; j < min(n, (b+bs)/metadata.SectorBytes); j++ {
					if berr != nil {
						fn(s+j, nil, fmt.Errorf("read entry sector %d (byte offset %d): %w", s+j, off+j*metadata.SectorBytes, berr))
					} else {
						fn(s+j, buf[j*metadata.SectorBytes:(j+1)*metadata.SectorBytes], nil)
					}
				}
			}
		}
		if progress != nil {
			progress(s+n, sectors)
		}
	}
}
