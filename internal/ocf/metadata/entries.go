package metadata

import (
	"encoding/binary"
	"fmt"
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

// Tag is the part of the cache UUID every entry sector carries: its first 8
// bytes. It tells a cache's entry sectors apart from another cache's, and
// identifies the cache when both superblock copies are lost.
type Tag uint64

// TagOf returns the tag of cache id.
func TagOf(id uuid.UUID) Tag { return Tag(binary.LittleEndian.Uint64(id[:8])) }

// String renders the tag as the start of the cache UUID it comes from,
// e.g. "5c1f2a3b-4c5d-6e7f".
func (t Tag) String() string {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], uint64(t))
	return fmt.Sprintf("%x-%x-%x", b[0:4], b[4:6], b[6:8])
}

// SectorTag reports whether b holds a sealed entry sector written as entry
// sector index (its checksum and index match) and returns the cache tag it
// carries. It decodes no entry; with no superblock to name the cache, it is
// how a scan recognises what is left of one.
func SectorTag(b []byte, index uint32) (Tag, bool) {
	le := binary.LittleEndian
	if len(b) < SectorBytes || le.Uint32(b[0:]) != Checksum(b[4:SectorBytes]) || le.Uint32(b[4:]) != index {
		return 0, false
	}
	return Tag(le.Uint64(b[8:])), true
}

// EncodeSector fills b (SectorBytes long) as entry sector index of cache id
// from entries (at most EntriesPerSector; missing slots are Unmapped). It
// fails, writing nothing valid, on an entry the decoder would reject: too
// many, masks beyond the line, dirty sectors not valid, or an unmapped
// entry with contents.
func EncodeSector(b []byte, index uint32, id uuid.UUID, sectorsPerLine int, entries []Entry) error {
	if len(entries) > EntriesPerSector(sectorsPerLine) {
		return fmt.Errorf("encode entry sector %d: %d entries, at most %d fit", index, len(entries), EntriesPerSector(sectorsPerLine))
	}
	s := NewSector(b, index, id, sectorsPerLine)
	for slot := range entries {
		if err := s.Put(slot, &entries[slot]); err != nil {
			return err
		}
	}
	s.Seal()
	return nil
}

// SectorWriter encodes one entry sector in place: NewSector, Put each
// mapped entry (slots not put stay unmapped), Seal.
type SectorWriter struct {
	b              []byte
	index          uint32
	sectorsPerLine int
	size           int // entry size
	perSector      int // EntriesPerSector(sectorsPerLine), not divided again per Put
	full           [2]uint64
}

// NewSector starts entry sector index of cache id in b (SectorBytes long),
// every slot unmapped.
func NewSector(b []byte, index uint32, id uuid.UUID, sectorsPerLine int) SectorWriter {
	b = b[:SectorBytes]
	clear(b)
	le := binary.LittleEndian
	le.PutUint32(b[4:], index)
	le.PutUint64(b[8:], uint64(TagOf(id)))
	w := EditSector(b, index, sectorsPerLine)
	for slot := range w.perSector {
		le.PutUint16(b[entrySectorHeader+slot*w.size+4:], NoCore)
	}
	return w
}

// EditSector returns a writer over b, which holds entry sector index as a
// SectorWriter left it: Put replaces the entries of the slots it is given,
// the others stay as they are, and Seal checksums the result. Editing the
// sector a writer last sealed gives the same bytes as encoding it anew.
func EditSector(b []byte, index uint32, sectorsPerLine int) SectorWriter {
	w := SectorWriter{b: b[:SectorBytes], index: index, sectorsPerLine: sectorsPerLine, size: EntrySize(sectorsPerLine), perSector: EntriesPerSector(sectorsPerLine)}
	for i := range sectorsPerLine {
		w.full[i/64] |= 1 << (i % 64)
	}
	return w
}

// Put encodes e into slot.
func (w *SectorWriter) Put(slot int, e *Entry) error {
	if slot >= w.perSector {
		return fmt.Errorf("encode entry sector %d: slot %d out of range", w.index, slot)
	}
	switch {
	case !e.Mapped() && (e.CoreLine != 0 || e.Valid != [2]uint64{} || e.Dirty != [2]uint64{}):
		return fmt.Errorf("encode entry sector %d slot %d: unmapped entry with contents", w.index, slot)
	case e.Valid[0]&^w.full[0] != 0 || e.Valid[1]&^w.full[1] != 0:
		return fmt.Errorf("encode entry sector %d slot %d: valid sectors beyond the line", w.index, slot)
	case e.Dirty[0]&^e.Valid[0] != 0 || e.Dirty[1]&^e.Valid[1] != 0:
		return fmt.Errorf("encode entry sector %d slot %d: dirty sectors not valid", w.index, slot)
	}
	le := binary.LittleEndian
	maskBytes := w.sectorsPerLine / 8
	o := entrySectorHeader + slot*w.size
	le.PutUint32(w.b[o:], e.CoreLine)
	le.PutUint16(w.b[o+4:], e.Core)
	putMask(w.b[o+8:o+8+maskBytes], e.Valid)
	putMask(w.b[o+8+maskBytes:o+8+2*maskBytes], e.Dirty)
	return nil
}

// Seal writes the sector's checksum.
func (w *SectorWriter) Seal() {
	binary.LittleEndian.PutUint32(w.b[0:], Checksum(w.b[4:SectorBytes]))
}

// DecodeSector validates entry sector index of cache id and decodes its
// entries into out (which must have room for EntriesPerSector). It fails
// with ErrCorrupt on a checksum, index or cache id mismatch, or on an entry
// whose dirty sectors are not all valid.
func DecodeSector(b []byte, index uint32, id uuid.UUID, sectorsPerLine int, out []Entry) error {
	return DecodeSectorOfTag(b, index, TagOf(id), sectorsPerLine, out)
}

// DecodeSectorOfTag is DecodeSector for a cache known only by its tag.
func DecodeSectorOfTag(b []byte, index uint32, tag Tag, sectorsPerLine int, out []Entry) error {
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
	if got := le.Uint64(b[8:]); got != uint64(tag) {
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
