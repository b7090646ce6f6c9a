package testutil

import (
	"encoding/binary"
	"fmt"
	"slices"
)

// SectorSize is what one stamp covers: the unit a device never tears.
const SectorSize = 512

// stampMagic opens every stamped sector.
const stampMagic = "bcSt"

// A stamped sector is laid out as follows (little-endian):
//
//	0   magic "bcSt"
//	4   Space  uint32
//	8   Run    uint64
//	16  Sector uint64
//	24  Write  uint64
//	32  Writer uint64
//	40  filler: 59 words, each derived from the fields above
//
// so a sector read back is recognised whole, in its place, from its run.
const stampHeader = 40

// Stamp names one write of one sector. A zero Write means never written:
// the sector holds zeroes.
type Stamp struct {
	Run    uint64 // the test run, such as its seed: another run's data is foreign
	Space  uint32 // the device, core or volume the sector belongs to
	Sector uint64 // the sector's number within Space
	Write  uint64 // which write: a sequence number, round or value
	Writer uint32 // who issued the write
}

func (s Stamp) String() string {
	return fmt.Sprintf("run %#x space %d sector %d write %d by %d", s.Run, s.Space, s.Sector, s.Write, s.Writer)
}

// Put fills p, one sector, with s's content.
func (s Stamp) Put(p []byte) {
	p = p[:SectorSize]
	if s.Write == 0 {
		clear(p)
		return
	}
	le := binary.LittleEndian
	copy(p, stampMagic)
	le.PutUint32(p[4:], s.Space)
	le.PutUint64(p[8:], s.Run)
	le.PutUint64(p[16:], s.Sector)
	le.PutUint64(p[24:], s.Write)
	le.PutUint64(p[32:], uint64(s.Writer))
	h := s.seed()
	for i := stampHeader; i < SectorSize; i += 8 {
		le.PutUint64(p[i:], mix(h+uint64(i)))
	}
}

// Fill stamps every sector of p with s's write, the first as s.Sector and
// each next one as the sector after.
func Fill(p []byte, s Stamp) {
	for i := 0; i+SectorSize <= len(p); i += SectorSize {
		s.Put(p[i:])
		s.Sector++
	}
}

// Read decodes one sector: the stamp it holds, the zero Stamp for zeroes,
// or an error when it is no whole stamp.
func Read(p []byte) (Stamp, error) {
	p = p[:SectorSize]
	if !slices.ContainsFunc(p, func(b byte) bool { return b != 0 }) {
		return Stamp{}, nil
	}
	if string(p[:4]) != stampMagic {
		return Stamp{}, fmt.Errorf("no stamp (starts % x)", p[:16])
	}
	le := binary.LittleEndian
	s := Stamp{
		Space:  le.Uint32(p[4:]),
		Run:    le.Uint64(p[8:]),
		Sector: le.Uint64(p[16:]),
		Write:  le.Uint64(p[24:]),
		Writer: uint32(le.Uint64(p[32:])),
	}
	var want [SectorSize]byte
	s.Put(want[:])
	if i := FirstDiff(p, want[:]); i >= 0 {
		return s, fmt.Errorf("torn or corrupt: bytes %d.. differ from the stamp of %v", i, s)
	}
	return s, nil
}

// Check decodes sector p read back as sector sector of space in run: the
// stamp it holds (the zero Stamp for zeroes), or an error when it is no
// whole stamp of that place and run.
func Check(p []byte, run uint64, space uint32, sector uint64) (Stamp, error) {
	s, err := Read(p)
	switch {
	case err != nil:
		return s, fmt.Errorf("space %d sector %d: %w", space, sector, err)
	case s.Write == 0:
		return s, nil
	case s.Space != space || s.Sector != sector:
		return s, fmt.Errorf("space %d sector %d holds the data of space %d sector %d (%v)", space, sector, s.Space, s.Sector, s)
	case s.Run != run:
		return s, fmt.Errorf("space %d sector %d holds data from run %#x, not %#x (%v)", space, sector, s.Run, run, s)
	}
	return s, nil
}

// CheckWhole decodes p, sectors first on of space in run, as one whole
// write: the write all its sectors hold (0 for zeroes), or an error when a
// sector is no stamp of its place or the sectors hold different writes.
func CheckWhole(p []byte, run uint64, space uint32, first uint64) (uint64, error) {
	var write uint64
	for i := 0; i+SectorSize <= len(p); i += SectorSize {
		sector := first + uint64(i/SectorSize)
		s, err := Check(p[i:], run, space, sector)
		if err != nil {
			return 0, err
		}
		if i == 0 {
			write = s.Write
		} else if s.Write != write {
			return 0, fmt.Errorf("space %d sectors %d..: torn: sector %d holds write %d, sector %d write %d", space, first, first, write, sector, s.Write)
		}
	}
	return write, nil
}

func (s Stamp) seed() uint64 {
	h := mix(s.Run ^ 0x9e3779b97f4a7c15)
	h = mix(h ^ uint64(s.Space)<<32 ^ uint64(s.Writer))
	h = mix(h ^ s.Sector)
	return mix(h ^ s.Write)
}

// mix is SplitMix64's finaliser: every input bit reaches every output bit.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	return x ^ x>>31
}
