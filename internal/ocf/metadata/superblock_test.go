package metadata_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"

	"blockcache/internal/ocf/metadata"
)

// requireEqualSuperblock fails unless got and want are the same superblock
// (a nil and an empty core list are the same).
func requireEqualSuperblock(t testing.TB, got, want *metadata.Superblock) {
	t.Helper()
	g, w := *got, *want
	if len(g.Cores) == 0 {
		g.Cores = nil
	}
	if len(w.Cores) == 0 {
		w.Cores = nil
	}
	if !reflect.DeepEqual(g, w) {
		t.Fatalf("superblock differs:\n got  %+v\n want %+v", g, w)
	}
}

func mustEncode(t testing.TB, s *metadata.Superblock) []byte {
	t.Helper()
	b, err := s.Encode()
	if err != nil {
		t.Fatalf("Encode: %v", err)
	}
	return b
}

// randomName returns a name of n bytes, any byte values.
func randomName(r *rand.Rand, n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return string(b)
}

// randomSuperblock returns a superblock with random fields and ncores cores
// for a device of devBytes.
func randomSuperblock(r *rand.Rand, devBytes int64, ncores int) *metadata.Superblock {
	lineSize := int64(4096) << r.IntN(5)
	s := &metadata.Superblock{
		Flags:     r.Uint32(),
		Seq:       r.Uint64(),
		Geometry:  metadata.ComputeGeometry(devBytes, lineSize),
		Mode:      uint8(r.Uint32()),
		Promotion: uint8(r.Uint32()), Cleaning: uint8(r.Uint32()), SeqCutoff: uint8(r.Uint32()),
	}
	for i := range s.CacheID {
		s.CacheID[i] = byte(r.Uint32())
	}
	for i := range s.Params {
		s.Params[i] = r.Uint32()
	}
	for i := range ncores {
		c := metadata.CoreRecord{
			ID:         uint16(i*3 + r.IntN(3)),
			SizeBytes:  r.Uint64(),
			CoreName:   randomName(r, r.IntN(40)),
			VolumeName: randomName(r, r.IntN(40)),
			Identity:   randomName(r, r.IntN(40)),
		}
		for j := range c.VolumeUUID {
			c.VolumeUUID[j] = byte(r.Uint32())
		}
		s.Cores = append(s.Cores, c)
	}
	return s
}

func TestSuperblockRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	long := strings.Repeat("n", metadata.MaxNameBytes)
	cases := map[string]*metadata.Superblock{
		"sample": sampleSuperblock(),
		"zero cores": func() *metadata.Superblock {
			s := sampleSuperblock()
			s.Cores = nil
			return s
		}(),
		"one core":   randomSuperblock(r, 5<<30, 1),
		"many cores": randomSuperblock(r, 3<<40, 300),
		"longest names": func() *metadata.Superblock {
			s := sampleSuperblock()
			s.Cores[0].CoreName, s.Cores[1].VolumeName, s.Cores[1].Identity = long, long, long
			s.Cores[1].CoreName = ""
			return s
		}(),
		"empty names, zero everything": {Geometry: metadata.ComputeGeometry(1<<20, 4096), Cores: []metadata.CoreRecord{{}}},
		"max core id": func() *metadata.Superblock {
			s := sampleSuperblock()
			s.Cores[1].ID = metadata.NoCore - 1
			return s
		}(),
	}
	for i := range 20 {
		cases[fmt.Sprintf("random %d", i)] = randomSuperblock(r, 1<<20+r.Int64N(1<<44), r.IntN(8))
	}
	for name, s := range cases {
		t.Run(name, func(t *testing.T) {
			devBytes := devBytesOf(s.Geometry)
			b := mustEncode(t, s)
			if len(b) > metadata.SuperblockCopyBytes {
				t.Fatalf("encoded %d bytes, more than a copy", len(b))
			}
			// Decode what the device returns: the record padded to its copy.
			padded := append(b, make([]byte, metadata.SuperblockCopyBytes-len(b))...)
			for _, in := range [][]byte{b, padded} {
				got, err := metadata.DecodeSuperblock(in, devBytes)
				if err != nil {
					t.Fatalf("Decode(%d bytes): %v", len(in), err)
				}
				requireEqualSuperblock(t, got, s)
				if got.Clean() != (s.Flags&metadata.FlagClean != 0) {
					t.Error("Clean() does not follow FlagClean")
				}
			}
		})
	}
}

// devBytesOf is the device size a geometry was computed for (any size that
// gives the same geometry would do).
func devBytesOf(g metadata.Geometry) int64 {
	if g.NumLines == 0 {
		return 1 << 20
	}
	return metadata.DeviceBytesFor(g.NumLines, g.LineSize)
}

func TestSuperblockEncodeLimits(t *testing.T) {
	s := sampleSuperblock()
	s.Cores[1].VolumeName = strings.Repeat("v", metadata.MaxNameBytes+1)
	if _, err := s.Encode(); err == nil {
		t.Error("Encode accepted a 256-byte volume name")
	}
	s = sampleSuperblock()
	s.Cores[0].CoreName = strings.Repeat("c", metadata.MaxNameBytes+1)
	if _, err := s.Encode(); err == nil {
		t.Error("Encode accepted a 256-byte core name")
	}
	s = sampleSuperblock()
	s.Cores[1].Identity = strings.Repeat("i", metadata.MaxNameBytes+1)
	if _, err := s.Encode(); err == nil {
		t.Error("Encode accepted a 256-byte identity")
	}

	// 118 cores of 553 bytes (both names 255, no identity) plus one of 134
	// fill a copy exactly: 148 + 118*553 + 134 = 65536.
	full := func(extra int) *metadata.Superblock {
		s := sampleSuperblock()
		s.Cores = nil
		long := strings.Repeat("x", metadata.MaxNameBytes)
		for i := range 118 {
			s.Cores = append(s.Cores, metadata.CoreRecord{ID: uint16(i), CoreName: long, VolumeName: long})
		}
		return withCore(s, metadata.CoreRecord{ID: 118, CoreName: strings.Repeat("y", 91+extra)})
	}
	b := mustEncode(t, full(0))
	if len(b) != metadata.SuperblockCopyBytes {
		t.Fatalf("full superblock is %d bytes, want %d", len(b), metadata.SuperblockCopyBytes)
	}
	got, err := metadata.DecodeSuperblock(b, sampleDevBytes)
	if err != nil {
		t.Fatal(err)
	}
	requireEqualSuperblock(t, got, full(0))
	if _, err := full(1).Encode(); err == nil {
		t.Error("Encode accepted a superblock one byte larger than a copy")
	}
	many := sampleSuperblock()
	many.Cores = make([]metadata.CoreRecord, 3000)
	for i := range many.Cores {
		many.Cores[i].ID = uint16(i)
	}
	if _, err := many.Encode(); err == nil {
		t.Error("Encode accepted 3000 cores")
	}
}

func withCore(s *metadata.Superblock, c metadata.CoreRecord) *metadata.Superblock {
	s.Cores = append(s.Cores, c)
	return s
}

// TestSuperblockEveryByteFlip flips each byte of an encoded superblock in
// turn: the magic gives ErrNoMetadata, the version ErrVersion, anything else
// a corruption error.
func TestSuperblockEveryByteFlip(t *testing.T) {
	b := mustEncode(t, sampleSuperblock())
	padded := append(b, make([]byte, metadata.SuperblockCopyBytes-len(b))...)
	for i := range b {
		for _, in := range [][]byte{b, padded} {
			in := append([]byte(nil), in...)
			in[i] ^= 0x01
			s, err := metadata.DecodeSuperblock(in, sampleDevBytes)
			var ok bool
			switch {
			case i < 8:
				ok = err == metadata.ErrNoMetadata
			case i < 12:
				ok = errors.Is(err, metadata.ErrVersion) && !metadata.IsCorrupt(err)
			default:
				ok = metadata.IsCorrupt(err) && !errors.Is(err, metadata.ErrVersion)
			}
			if !ok || s != nil {
				t.Fatalf("byte %d flipped (%d-byte input): Decode = %v, %v", i, len(in), s, err)
			}
		}
	}
}

func TestSuperblockRejects(t *testing.T) {
	b := mustEncode(t, sampleSuperblock())
	for name, c := range map[string]struct {
		in       []byte
		devBytes int64
		want     error
	}{
		"empty":          {nil, sampleDevBytes, metadata.ErrNoMetadata},
		"zeroes":         {make([]byte, metadata.SuperblockCopyBytes), sampleDevBytes, metadata.ErrNoMetadata},
		"magic only":     {[]byte(metadata.Magic), sampleDevBytes, metadata.ErrCorrupt},
		"truncated":      {b[:len(b)-1], sampleDevBytes, metadata.ErrCorrupt},
		"fixed part":     {b[:148], sampleDevBytes, metadata.ErrCorrupt},
		"smaller device": {b, sampleDevBytes - 4096, metadata.ErrCorrupt},
		"larger device":  {b, sampleDevBytes + 4096, metadata.ErrCorrupt},
	} {
		if _, err := metadata.DecodeSuperblock(c.in, c.devBytes); !errors.Is(err, c.want) {
			t.Errorf("%s: Decode = %v, want %v", name, err, c.want)
		}
	}
	// A device a little larger, but too small for another line, is fine.
	if _, err := metadata.DecodeSuperblock(b, sampleDevBytes+4095); err != nil {
		t.Errorf("device 4095 bytes larger: %v", err)
	}
}

// reseal rewrites the checksum of an encoded superblock after a test
// changed its bytes, so that only the change itself can be rejected.
func reseal(b []byte) []byte {
	n := int(uint32(b[16]) | uint32(b[17])<<8 | uint32(b[18])<<16 | uint32(b[19])<<24)
	c := metadata.Checksum(b[16:n])
	b[12], b[13], b[14], b[15] = byte(c), byte(c>>8), byte(c>>16), byte(c>>24)
	return b
}

// TestSuperblockRejectsInconsistent checks the checks behind the checksum:
// records that a buggy or hostile writer sealed with a valid CRC.
func TestSuperblockRejectsInconsistent(t *testing.T) {
	edits := map[string]func(b []byte){
		"line size 2 KiB":      func(b []byte) { b[49] = 0x08 },
		"line size 128 KiB":    func(b []byte) { b[48], b[49], b[50] = 0, 0, 2 },
		"line size not pow2":   func(b []byte) { b[48] = 1 },
		"one more line":        func(b []byte) { b[56]++ },
		"data offset moved":    func(b []byte) { b[73] += 0x10 },
		"entry area moved":     func(b []byte) { b[65]++ },
		"duplicate core id":    func(b []byte) { b[148+43+7+14+31] = 0 }, // core 1's id := core 0's
		"core id NoCore":       func(b []byte) { b[148], b[149] = 0xFF, 0xFF },
		"one core fewer":       func(b []byte) { b[144] = 1 },
		"one core more":        func(b []byte) { b[144] = 3 },
		"name past the end":    func(b []byte) { b[len(b)-23] = 200 }, // core 1's volume name length
		"identity past end":    func(b []byte) { b[len(b)-19] = 200 }, // core 1's identity length
		"length below fixed":   func(b []byte) { b[16], b[17] = 100, 0 },
		"length above a copy":  func(b []byte) { b[16], b[17], b[18] = 0, 0, 2 },
		"length beyond buffer": func(b []byte) { b[17]++ },
	}
	for name, edit := range edits {
		b := mustEncode(t, sampleSuperblock())
		edit(b)
		if n := int(b[16]) | int(b[17])<<8 | int(b[18])<<16; n >= 16 && n <= len(b) {
			reseal(b)
		}
		if _, err := metadata.DecodeSuperblock(b, sampleDevBytes); !metadata.IsCorrupt(err) {
			t.Errorf("%s: Decode = %v, want a corruption error", name, err)
		}
	}
}

// TestSuperblockRejectsLineSize encodes superblocks whose line size is
// outside 4–64 KiB or not a power of two, with the geometry such a line size
// would give, so that only the line size check can reject them.
func TestSuperblockRejectsLineSize(t *testing.T) {
	for _, ls := range []int64{512, 2048, 12288, 128 << 10} {
		s := sampleSuperblock()
		s.Geometry = metadata.ComputeGeometry(sampleDevBytes, ls)
		b, err := s.Encode()
		if err != nil {
			continue // refusing to encode it is fine too
		}
		if _, err := metadata.DecodeSuperblock(b, sampleDevBytes); !metadata.IsCorrupt(err) {
			t.Errorf("line size %d: Decode = %v, want a corruption error", ls, err)
		}
	}
}

func TestSuperblockVersion(t *testing.T) {
	b := mustEncode(t, sampleSuperblock())
	b[8] = metadata.Version + 1
	if _, err := metadata.DecodeSuperblock(b, sampleDevBytes); !errors.Is(err, metadata.ErrVersion) {
		t.Fatalf("version %d: %v", b[8], err)
	}
	// The version is checked before the checksum and the geometry: a newer
	// format is reported as such, not as corruption.
	b[20] ^= 0xFF
	if _, err := metadata.DecodeSuperblock(b, 12345); !errors.Is(err, metadata.ErrVersion) || metadata.IsCorrupt(err) {
		t.Fatalf("version %d with a bad checksum: %v", b[8], err)
	}
}

func TestNewest(t *testing.T) {
	enc := func(seq uint64) []byte {
		s := sampleSuperblock()
		s.Seq = seq
		return mustEncode(t, s)
	}
	damaged := func(seq uint64) []byte {
		b := enc(seq)
		b[100] ^= 0x40
		return b
	}
	blank := make([]byte, metadata.SuperblockCopyBytes)
	newer := enc(6)
	newer[8] = 9 // a version from the future

	for _, c := range []struct {
		name        string
		a, b        []byte
		wantSeq     uint64 // 0: no superblock
		wantDamaged bool
		wantErr     func(error) bool
	}{
		{"B newer", enc(5), enc(6), 6, false, nil},
		{"A newer", enc(8), enc(7), 8, false, nil},
		{"A damaged", damaged(9), enc(8), 8, true, nil},
		{"B damaged", enc(3), damaged(4), 3, true, nil},
		{"B blank", enc(1), blank, 1, true, nil},
		{"A blank", blank, enc(2), 2, true, nil},
		{"both blank", blank, blank, 0, false, func(err error) bool { return err == metadata.ErrNoMetadata }},
		{"both damaged", damaged(1), damaged(2), 0, false, metadata.IsCorrupt},
		{"damaged and blank", blank, damaged(2), 0, false, metadata.IsCorrupt},
		{"blank and damaged", damaged(2), blank, 0, false, metadata.IsCorrupt},
		{"newer version and blank", blank, newer, 0, false, func(err error) bool { return errors.Is(err, metadata.ErrVersion) }},
	} {
		sb, dmg, err := metadata.Newest(c.a, c.b, sampleDevBytes)
		switch {
		case c.wantSeq != 0 && (err != nil || sb == nil || sb.Seq != c.wantSeq):
			t.Errorf("%s: Newest = %v, %v; want seq %d", c.name, sb, err, c.wantSeq)
		case c.wantSeq != 0 && (dmg != nil) != c.wantDamaged:
			t.Errorf("%s: damaged = %v, want damaged %v", c.name, dmg, c.wantDamaged)
		case c.wantSeq == 0 && (sb != nil || dmg != nil || err == nil || !c.wantErr(err)):
			t.Errorf("%s: Newest = %v, %v, %v; want no superblock and a matching error", c.name, sb, dmg, err)
		}
	}
	// The damaged copy's error says which copy and why.
	_, dmg, _ := metadata.Newest(damaged(9), enc(8), sampleDevBytes)
	if !metadata.IsCorrupt(dmg) || !strings.Contains(dmg.Error(), "copy A") {
		t.Errorf("damaged error %v does not name copy A as corrupt", dmg)
	}
}
