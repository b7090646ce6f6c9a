// Package metadata is the on-disk format of a cache device: where things
// are, how each record is laid out, and how it is encoded, decoded and
// validated. It does no IO; the engine (package ocf) reads and writes the
// bytes.
//
// # Layout of a cache device
//
// All integers are little-endian.
//
//	0        64 KiB     128 KiB                        dataOffset
//	+--------+----------+------------------------------+------------------------
//	| super- | super-   | line entries, packed in      | data area: line 0,
//	| block A| block B  | 512-byte entry sectors       | line 1, ... (lineSize each)
//	+--------+----------+------------------------------+------------------------
//
// The two superblock copies alternate: a new superblock has the next
// sequence number and goes to copy seq%2, so a torn superblock write leaves
// the other copy valid; the loader takes the valid copy with the highest
// sequence number. dataOffset is a multiple of 4 KiB.
//
// # Superblock (one copy; Length bytes are meaningful)
//
//	off size field
//	  0    8 magic "BCACHESB"
//	  8    4 format version (Version; 1 is still read)
//	 12    4 CRC32C (Castagnoli) of bytes [16, Length)
//	 16    4 Length
//	 20    4 flags: bit 0 = clean shutdown
//	 24    8 sequence number
//	 32   16 cache UUID
//	 48    4 line size, bytes
//	 52    1 cache mode (ocf.Mode numbering)
//	 53    1 promotion policy   54 1 cleaning policy   55 1 seq cutoff policy
//	 56    8 number of lines
//	 64    8 entry area offset (SuperblockArea)
//	 72    8 data area offset
//	 80   64 policy parameters (Params, 16 x uint32)
//	144    2 number of core records
//	146    2 reserved (zero)
//	148  ... core records
//
// # Core record
//
//	off size field
//	  0    2 core id
//	  2    2 reserved (zero)
//	  4    8 core size, bytes
//	 12   16 volume UUID
//	 28    1 sequential cutoff policy (ocf.SeqCutoffPolicy numbering)
//	 29    3 reserved (zero)
//	 32    4 sequential cutoff threshold, bytes
//	 36    4 sequential cutoff promotion count
//	 40    1 n = length of the core bdev name, then n bytes
//	  .    1 m = length of the volume name, then m bytes
//	  .    1 k = length of the core device's identity, then k bytes
//	         (version 2 only; version 1 records end after the volume name)
//
// The identity tells the core device apart from another of the same name
// and size: "file:<st_dev major>:<minor>:<inode>" for a regular file, a
// stable id such as a /dev/disk/by-id name for a block device, empty when
// unknown (every version 1 record).
//
// # Entry sector (512 bytes)
//
//	off size field
//	  0    4 CRC32C of bytes [4, 512)
//	  4    4 sector index within the entry area (catches misdirected writes)
//	  8    8 first 8 bytes of the cache UUID (catches another cache's sectors)
//	 16  ... EntriesPerSector entries of EntrySize bytes, then zero padding
//
// # Entry (EntrySize = 8 + 2*sectorsPerLine/8 bytes)
//
//	off size field
//	  0    4 core line number
//	  4    2 core id; 0xFFFF = the line maps nothing
//	  6    2 reserved (zero)
//	  8    s valid sector mask, s = sectorsPerLine/8 bytes, bit i = sector i
//	8+s    s dirty sector mask
//
// With 4 KiB lines an entry is 10 bytes and a sector holds 49 of them:
// 10.4 bytes on disk per line. With 64 KiB lines: 40 bytes per line, 2.7 per
// 4 KiB of cache.
//
// Every constant in this file is part of the on-disk format: never change
// one; add a version instead.
package metadata

// On-disk constants. Never change them.
const (
	// Magic opens every superblock copy.
	Magic = "BCACHESB"
	// Version is the format version this package writes. It reads this
	// one and VersionV1.
	Version = 2
	// VersionV1 is the first format: core records without an identity.
	VersionV1 = 1

	// SuperblockCopyBytes is the space reserved for one superblock copy.
	SuperblockCopyBytes = 64 << 10
	// SuperblockArea is the space of both copies; the entry area starts here.
	SuperblockArea = 2 * SuperblockCopyBytes
	// SectorBytes is the unit of entry writes, atomic on the device.
	SectorBytes = 512
	// entrySectorHeader is the checksum, index and cache id of a sector.
	entrySectorHeader = 16
	// entryHeaderBytes is an entry's core line, core id and reserved bytes.
	entryHeaderBytes = 8
	// DataAlign aligns the data area.
	DataAlign = 4 << 10

	// NoCore in an entry's core id marks an unmapped line.
	NoCore = 0xFFFF

	// FlagClean marks a superblock written at a clean shutdown.
	FlagClean = 1 << 0

	// superblockFixed is the size of the superblock before core records.
	superblockFixed = 148
	// coreRecordFixed is the size of a core record without its names and
	// identity: the fixed fields and the three length bytes.
	coreRecordFixed = 43
	// coreRecordFixedV1 is the same in version 1, which has no identity.
	coreRecordFixedV1 = 42
	// MaxNameBytes bounds the names and the identity in a core record.
	MaxNameBytes = 255
	// NumParams is the number of policy parameter slots.
	NumParams = 16
)

// EntrySize is the size of one line's entry for lines of sectorsPerLine
// sectors (8 to 128).
func EntrySize(sectorsPerLine int) int { return entryHeaderBytes + 2*sectorsPerLine/8 }

// EntriesPerSector is how many entries one entry sector holds.
func EntriesPerSector(sectorsPerLine int) int {
	return (SectorBytes - entrySectorHeader) / EntrySize(sectorsPerLine)
}

// Geometry is where the parts of a cache device are.
type Geometry struct {
	LineSize     int64 // bytes
	NumLines     int64
	EntrySectors int64 // sectors of the entry area
	DataOffset   int64 // bytes
}

// SectorsPerLine is LineSize/512.
func (g Geometry) SectorsPerLine() int { return int(g.LineSize / SectorBytes) }

// EntrySectorOffset is the byte offset of entry sector s.
func (g Geometry) EntrySectorOffset(s int64) int64 { return SuperblockArea + s*SectorBytes }

// SectorOfLine returns the entry sector holding line i's entry and the
// entry's index in it.
func (g Geometry) SectorOfLine(i int64) (sector int64, slot int) {
	eps := int64(EntriesPerSector(g.SectorsPerLine()))
	return i / eps, int(i % eps)
}

// ComputeGeometry fits the most lines of lineSize bytes (a power of two,
// 4–64 KiB) on a device of devBytes, after the superblocks and entries. It
// returns NumLines 0 when not even one line fits.
func ComputeGeometry(devBytes, lineSize int64) Geometry {
	spl := int(lineSize / SectorBytes)
	eps := int64(EntriesPerSector(spl))
	g := Geometry{LineSize: lineSize}
	if devBytes <= SuperblockArea {
		return g
	}
	// Each line costs lineSize plus 1/eps of a sector; start from that
	// estimate and step down until everything fits.
	n := (devBytes - SuperblockArea) * eps / (lineSize*eps + SectorBytes)
	for ; n > 0; n-- {
		sectors := (n + eps - 1) / eps
		data := alignUp(SuperblockArea+sectors*SectorBytes, DataAlign)
		if data+n*lineSize <= devBytes {
			g.NumLines, g.EntrySectors, g.DataOffset = n, sectors, data
			return g
		}
	}
	return g
}

// DeviceBytesFor is the smallest device size that holds lines lines of
// lineSize bytes.
func DeviceBytesFor(lines, lineSize int64) int64 {
	eps := int64(EntriesPerSector(int(lineSize / SectorBytes)))
	sectors := (lines + eps - 1) / eps
	return alignUp(SuperblockArea+sectors*SectorBytes, DataAlign) + lines*lineSize
}

func alignUp(n, a int64) int64 { return (n + a - 1) / a * a }
