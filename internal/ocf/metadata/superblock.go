package metadata

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"

	"github.com/google/uuid"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Checksum is the CRC32C of b.
func Checksum(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }

// Superblock is the decoded superblock: the cache's configuration and cores.
type Superblock struct {
	Flags    uint32
	Seq      uint64
	CacheID  uuid.UUID
	Geometry Geometry
	Mode     uint8
	// Promotion, Cleaning and SeqCutoff are policy numbers; Params their
	// parameters. Zero means the default.
	Promotion, Cleaning, SeqCutoff uint8
	Params                         [NumParams]uint32
	Cores                          []CoreRecord
}

// Clean reports whether the superblock was written at a clean shutdown.
func (s *Superblock) Clean() bool { return s.Flags&FlagClean != 0 }

// CoreRecord is one core of the cache as the superblock records it.
type CoreRecord struct {
	ID         uint16
	SizeBytes  uint64
	VolumeUUID uuid.UUID
	CoreName   string // the core bdev's name
	VolumeName string // the cached volume's name
	// Identity names the core device itself, whatever its bdev name (see
	// the package doc); empty when unknown, as in every version 1 record.
	Identity string
	// The core's sequential cutoff: policy number, threshold in bytes,
	// promotion count (zero: the defaults).
	SeqCutoff         uint8
	SeqThreshold      uint32
	SeqPromotionCount uint32
}

// Encode returns the superblock's bytes (at most SuperblockCopyBytes), its
// checksum filled in. It fails if the cores do not fit or a name is longer
// than MaxNameBytes.
func (s *Superblock) Encode() ([]byte, error) {
	n := superblockFixed
	for _, c := range s.Cores {
		if len(c.CoreName) > MaxNameBytes || len(c.VolumeName) > MaxNameBytes {
			return nil, fmt.Errorf("encode superblock: core %d: name longer than %d bytes", c.ID, MaxNameBytes)
		}
		if len(c.Identity) > MaxNameBytes {
			return nil, fmt.Errorf("encode superblock: core %d: identity longer than %d bytes", c.ID, MaxNameBytes)
		}
		n += coreRecordFixed + len(c.CoreName) + len(c.VolumeName) + len(c.Identity)
	}
	if n > SuperblockCopyBytes {
		return nil, fmt.Errorf("encode superblock: %d cores need %d bytes, more than the %d reserved", len(s.Cores), n, SuperblockCopyBytes)
	}
	if ls := s.Geometry.LineSize; ls < 4096 || ls > 65536 || ls&(ls-1) != 0 {
		return nil, fmt.Errorf("encode superblock: line size %d", ls)
	}
	seen := map[uint16]bool{}
	for _, c := range s.Cores {
		if c.ID == NoCore || seen[c.ID] {
			return nil, fmt.Errorf("encode superblock: bad or repeated core id %d", c.ID)
		}
		seen[c.ID] = true
	}
	b := make([]byte, n)
	le := binary.LittleEndian
	copy(b[0:8], Magic)
	le.PutUint32(b[8:], Version)
	le.PutUint32(b[16:], uint32(n))
	le.PutUint32(b[20:], s.Flags)
	le.PutUint64(b[24:], s.Seq)
	copy(b[32:48], s.CacheID[:])
	le.PutUint32(b[48:], uint32(s.Geometry.LineSize))
	b[52], b[53], b[54], b[55] = s.Mode, s.Promotion, s.Cleaning, s.SeqCutoff
	le.PutUint64(b[56:], uint64(s.Geometry.NumLines))
	le.PutUint64(b[64:], SuperblockArea)
	le.PutUint64(b[72:], uint64(s.Geometry.DataOffset))
	for i, p := range s.Params {
		le.PutUint32(b[80+4*i:], p)
	}
	le.PutUint16(b[144:], uint16(len(s.Cores)))
	off := superblockFixed
	for _, c := range s.Cores {
		le.PutUint16(b[off:], c.ID)
		le.PutUint64(b[off+4:], c.SizeBytes)
		copy(b[off+12:off+28], c.VolumeUUID[:])
		b[off+28] = c.SeqCutoff
		le.PutUint32(b[off+32:], c.SeqThreshold)
		le.PutUint32(b[off+36:], c.SeqPromotionCount)
		off += 40
		b[off] = byte(len(c.CoreName))
		off += 1 + copy(b[off+1:], c.CoreName)
		b[off] = byte(len(c.VolumeName))
		off += 1 + copy(b[off+1:], c.VolumeName)
		b[off] = byte(len(c.Identity))
		off += 1 + copy(b[off+1:], c.Identity)
	}
	le.PutUint32(b[12:], Checksum(b[16:n]))
	return b, nil
}

// DecodeSuperblock validates and decodes one superblock copy read from the
// device (at least its first Length bytes; SuperblockCopyBytes is always
// enough), of format Version or VersionV1. It checks the magic, then the
// version, then the length and checksum, then the geometry against
// devBytes, each with its own error: ErrNoMetadata, ErrVersion, or
// ErrCorrupt naming what is wrong.
func DecodeSuperblock(b []byte, devBytes int64) (*Superblock, error) {
	le := binary.LittleEndian
	if len(b) < 8 || string(b[0:8]) != Magic {
		return nil, ErrNoMetadata
	}
	if len(b) < superblockFixed {
		return nil, corruptf("superblock truncated to %d bytes", len(b))
	}
	version := le.Uint32(b[8:])
	if version != Version && version != VersionV1 {
		return nil, fmt.Errorf("%w: %d (this build reads %d and %d)", ErrVersion, version, VersionV1, Version)
	}
	recordFixed := coreRecordFixed
	if version == VersionV1 {
		recordFixed = coreRecordFixedV1
	}
	n := int(le.Uint32(b[16:]))
	if n < superblockFixed || n > SuperblockCopyBytes || n > len(b) {
		return nil, corruptf("superblock length %d out of range", n)
	}
	if want, got := le.Uint32(b[12:]), Checksum(b[16:n]); want != got {
		return nil, corruptf("superblock checksum %08x, computed %08x", want, got)
	}
	s := &Superblock{
		Flags: le.Uint32(b[20:]),
		Seq:   le.Uint64(b[24:]),
		Mode:  b[52], Promotion: b[53], Cleaning: b[54], SeqCutoff: b[55],
	}
	copy(s.CacheID[:], b[32:48])
	for i := range s.Params {
		s.Params[i] = le.Uint32(b[80+4*i:])
	}
	lineSize := int64(le.Uint32(b[48:]))
	if lineSize < 4096 || lineSize > 65536 || lineSize&(lineSize-1) != 0 {
		return nil, corruptf("superblock line size %d", lineSize)
	}
	want := ComputeGeometry(devBytes, lineSize)
	got := Geometry{LineSize: lineSize, NumLines: int64(le.Uint64(b[56:])), DataOffset: int64(le.Uint64(b[72:]))}
	got.EntrySectors = want.EntrySectors
	if le.Uint64(b[64:]) != SuperblockArea || got != want {
		return nil, corruptf("superblock geometry (%d lines, data at %d) does not match a %d-byte device (%d lines, data at %d)",
			got.NumLines, got.DataOffset, devBytes, want.NumLines, want.DataOffset)
	}
	s.Geometry = want
	ncores := int(le.Uint16(b[144:]))
	off := superblockFixed
	seen := map[uint16]bool{}
	for i := range ncores {
		if off+recordFixed > n {
			return nil, corruptf("superblock core record %d runs past the end", i)
		}
		var c CoreRecord
		c.ID = le.Uint16(b[off:])
		c.SizeBytes = le.Uint64(b[off+4:])
		copy(c.VolumeUUID[:], b[off+12:off+28])
		c.SeqCutoff = b[off+28]
		c.SeqThreshold = le.Uint32(b[off+32:])
		c.SeqPromotionCount = le.Uint32(b[off+36:])
		off += 40
		var ok bool
		if c.CoreName, off, ok = readName(b[:n], off); !ok {
			return nil, corruptf("superblock core record %d: name runs past the end", i)
		}
		if c.VolumeName, off, ok = readName(b[:n], off); !ok {
			return nil, corruptf("superblock core record %d: volume name runs past the end", i)
		}
		if version != VersionV1 {
			if c.Identity, off, ok = readName(b[:n], off); !ok {
				return nil, corruptf("superblock core record %d: identity runs past the end", i)
			}
		}
		if c.ID == NoCore || seen[c.ID] {
			return nil, corruptf("superblock core record %d: bad or repeated core id %d", i, c.ID)
		}
		seen[c.ID] = true
		s.Cores = append(s.Cores, c)
	}
	if off != n {
		return nil, corruptf("superblock has %d bytes after its core records", n-off)
	}
	return s, nil
}

func readName(b []byte, off int) (string, int, bool) {
	if off >= len(b) {
		return "", off, false
	}
	l := int(b[off])
	if off+1+l > len(b) {
		return "", off, false
	}
	return string(b[off+1 : off+1+l]), off + 1 + l, true
}

// Newest picks the superblock to load from the two copies, as bbolt picks
// its meta page: the valid copy with the higher sequence number. One invalid
// copy is expected after a crash during a superblock write (the engine
// writes both copies for every change, so the other is always current
// enough); damaged reports it so the caller can warn. With no valid copy it
// returns ErrNoMetadata when neither has the magic, else the error of the
// first copy that has it.
func Newest(a, b []byte, devBytes int64) (sb *Superblock, damaged error, err error) {
	sa, errA := DecodeSuperblock(a, devBytes)
	sbb, errB := DecodeSuperblock(b, devBytes)
	switch {
	case errA == nil && errB == nil:
		if sbb.Seq > sa.Seq {
			return sbb, nil, nil
		}
		return sa, nil, nil
	case errA == nil:
		return sa, fmt.Errorf("superblock copy B: %w", errB), nil
	case errB == nil:
		return sbb, fmt.Errorf("superblock copy A: %w", errA), nil
	case errA == ErrNoMetadata && errB == ErrNoMetadata:
		return nil, nil, ErrNoMetadata
	case errA != ErrNoMetadata:
		return nil, nil, fmt.Errorf("superblock copy A: %w", errA)
	default:
		return nil, nil, fmt.Errorf("superblock copy B: %w", errB)
	}
}
