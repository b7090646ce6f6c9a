package metadata

import (
	"encoding/binary"
	"math/bits"

	"github.com/google/uuid"
)

// Entry is one line's metadata: which core line it holds and which of its
// sectors are valid and dirty. Masks have one bit per sector, sector i in
// word i/64, bit i%64.
type Entry struct {
	Core         uint16 // NoCore when the line maps nothing
	CoreLine     uint32
	Valid, Dirty [2]uint64
}

// Mapped reports whether the entry maps a core line.
func (e *Entry) Mapped() bool { return e.Core != NoCore }

// Unmapped is the entry of a line that holds nothing.
var Unmapped = Entry{Core: NoCore}

// cacheTag is the part of the cache UUID every entry sector carries.
func cacheTag(id uuid.UUID) uint64 { return binary.LittleEndian.Uint64(id[:8]) }

// EncodeSector fills b (SectorBytes long) as entry sector index of cache id
// from entries (at most EntriesPerSector; missing slots are Unmapped).
func EncodeSector(b []byte, index uint32, id uuid.UUID, sectorsPerLine int, entries []Entry) {
	clear(b[:SectorBytes])
	le := binary.LittleEndian
	le.PutUint32(b[4:], index)
	le.PutUint64(b[8:], cacheTag(id))
	size, maskBytes := EntrySize(sectorsPerLine), sectorsPerLine/8
	eps := EntriesPerSector(sectorsPerLine)
	for slot := range eps {
		e := Unmapped
		if slot < len(entries) {
			e = entries[slot]
		}
		o := entrySectorHeader + slot*size
		le.PutUint32(b[o:], e.CoreLine)
		le.PutUint16(b[o+4:], e.Core)
		putMask(b[o+8:o+8+maskBytes], e.Valid)
		putMask(b[o+8+maskBytes:o+8+2*maskBytes], e.Dirty)
	}
	le.PutUint32(b[0:], Checksum(b[4:SectorBytes]))
}

// DecodeSector validates entry sector index of cache id and decodes its
// entries into out (which must have room for EntriesPerSector). It fails
// with ErrCorrupt on a checksum, index or cache id mismatch, or on an entry
// whose dirty sectors are not all valid.
func DecodeSector(b []byte, index uint32, id uuid.UUID, sectorsPerLine int, out []Entry) error {
	le := binary.LittleEndian
	if len(b) < SectorBytes {
		return corruptf("entry sector %d truncated", index)
	}
	if want, got := le.Uint32(b[0:]), Checksum(b[4:SectorBytes]); want != got {
		return corruptf("entry sector %d: checksum %08x, computed %08x", index, want, got)
	}
	if got := le.Uint32(b[4:]); got != index {
		return corruptf("entry sector %d: holds sector %d (misdirected write)", index, got)
	}
	if got := le.Uint64(b[8:]); got != cacheTag(id) {
		return corruptf("entry sector %d: belongs to another cache (tag %016x)", index, got)
	}
	size, maskBytes := EntrySize(sectorsPerLine), sectorsPerLine/8
	for slot := range EntriesPerSector(sectorsPerLine) {
		o := entrySectorHeader + slot*size
		e := Entry{CoreLine: le.Uint32(b[o:]), Core: le.Uint16(b[o+4:])}
		e.Valid = getMask(b[o+8 : o+8+maskBytes])
		e.Dirty = getMask(b[o+8+maskBytes : o+8+2*maskBytes])
		if e.Dirty[0]&^e.Valid[0] != 0 || e.Dirty[1]&^e.Valid[1] != 0 {
			return corruptf("entry sector %d slot %d: dirty sectors not valid", index, slot)
		}
		if !e.Mapped() && (e.CoreLine != 0 || e.Valid != [2]uint64{}) {
			return corruptf("entry sector %d slot %d: unmapped entry with contents", index, slot)
		}
		out[slot] = e
	}
	return nil
}

func putMask(b []byte, m [2]uint64) {
	for i := range b {
		b[i] = byte(m[i/8] >> (8 * (i % 8)))
	}
}

func getMask(b []byte) [2]uint64 {
	var m [2]uint64
	for i, v := range b {
		m[i/8] |= uint64(v) << (8 * (i % 8))
	}
	return m
}

// Count returns the number of set bits of a mask.
func Count(m [2]uint64) int { return bits.OnesCount64(m[0]) + bits.OnesCount64(m[1]) }
