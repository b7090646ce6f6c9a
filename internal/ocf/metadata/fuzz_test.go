package metadata_test

import (
	"math/rand/v2"
	"testing"

	"blockcache/internal/ocf/metadata"
)

// FuzzDecodeSuperblock feeds arbitrary bytes and device sizes to
// DecodeSuperblock: it must not panic, and whatever it accepts must encode
// again to a record that decodes to the same superblock.
func FuzzDecodeSuperblock(f *testing.F) {
	r := rand.New(rand.NewPCG(7, 8))
	f.Add(mustEncode(f, sampleSuperblock()), int64(sampleDevBytes))
	for i := range 8 {
		s := randomSuperblock(r, 1<<20+r.Int64N(1<<40), i)
		f.Add(mustEncode(f, s), devBytesOf(s.Geometry))
	}
	tiny := &metadata.Superblock{Geometry: metadata.ComputeGeometry(4096, 4096)}
	f.Add(mustEncode(f, tiny), int64(4096))
	f.Add([]byte(metadata.Magic), int64(1<<30))
	f.Add([]byte{}, int64(0))

	f.Fuzz(func(t *testing.T, b []byte, devBytes int64) {
		s, err := metadata.DecodeSuperblock(b, devBytes)
		if err != nil {
			if s != nil {
				t.Fatalf("Decode returned a superblock with error %v", err)
			}
			return
		}
		if devBytes <= 0 || devBytes > 1<<62 {
			// ComputeGeometry's estimate multiplies devBytes by up to
			// 49; keep the property to sizes that cannot overflow.
			return
		}
		b2, err := s.Encode()
		if err != nil {
			t.Fatalf("decoded superblock does not encode: %v", err)
		}
		s2, err := metadata.DecodeSuperblock(b2, devBytes)
		if err != nil {
			t.Fatalf("re-encoded superblock does not decode: %v", err)
		}
		requireEqualSuperblock(t, s2, s)
		if b[8] == metadata.VersionV1 {
			return // re-encoded in the current version, which is longer
		}
		// The encoding is canonical: the accepted bytes are the re-encoded
		// ones, but for the checksum and reserved bytes (which Decode does
		// not check; see reservedOffsets).
		in := append([]byte(nil), b[:len(b2)]...)
		for _, o := range reservedOffsets(s) {
			in[o], in[o+1] = 0, 0
		}
		copy(in[12:16], b2[12:16])
		if string(in) != string(b2) {
			t.Fatalf("accepted bytes differ from their re-encoding:\n%s\n%s", dump(in), dump(b2))
		}
	})
}

// FuzzDecodeSector feeds arbitrary bytes to DecodeSector for every line
// size: it must not panic, and whatever it accepts must encode again to a
// sector that decodes to the same entries.
func FuzzDecodeSector(f *testing.F) {
	r := rand.New(rand.NewPCG(9, 10))
	id := sampleCacheID
	for i, spl := range lineSectors {
		entries := make([]metadata.Entry, metadata.EntriesPerSector(spl))
		for j := range entries {
			entries[j] = randomEntry(r, spl)
		}
		b := make([]byte, metadata.SectorBytes)
		metadata.EncodeSector(b, uint32(i), id, spl, entries)
		f.Add(b, uint32(i), uint8(i))
		metadata.EncodeSector(b, 1000, id, spl, sampleEntries(spl))
		f.Add(b, uint32(1000), uint8(i))
	}
	f.Add(make([]byte, metadata.SectorBytes), uint32(0), uint8(0))
	f.Add([]byte{1, 2, 3}, uint32(0), uint8(4))

	f.Fuzz(func(t *testing.T, b []byte, index uint32, lineSel uint8) {
		spl := lineSectors[int(lineSel)%len(lineSectors)]
		eps := metadata.EntriesPerSector(spl)
		out := make([]metadata.Entry, eps)
		if err := metadata.DecodeSector(b, index, id, spl, out); err != nil {
			if !metadata.IsCorrupt(err) {
				t.Fatalf("DecodeSector error %v is not a corruption error", err)
			}
			return
		}
		for slot, e := range out {
			if e.Dirty[0]&^e.Valid[0] != 0 || e.Dirty[1]&^e.Valid[1] != 0 {
				t.Fatalf("slot %d accepted with dirty sectors that are not valid", slot)
			}
			if full := mask(spl); e.Valid[0]&^full[0] != 0 || e.Valid[1]&^full[1] != 0 {
				t.Fatalf("slot %d: valid mask %x beyond %d sectors", slot, e.Valid, spl)
			}
		}
		b2 := make([]byte, metadata.SectorBytes)
		metadata.EncodeSector(b2, index, id, spl, out)
		out2 := make([]metadata.Entry, eps)
		if err := metadata.DecodeSector(b2, index, id, spl, out2); err != nil {
			t.Fatalf("re-encoded sector does not decode: %v", err)
		}
		for slot := range out {
			if out[slot] != out2[slot] {
				t.Fatalf("slot %d: %+v decodes again as %+v", slot, out[slot], out2[slot])
			}
		}
		// Another cache's id or another index must not accept the sector.
		other := id
		other[0] ^= 1
		if metadata.DecodeSector(b, index, other, spl, out2) == nil || metadata.DecodeSector(b, index+1, id, spl, out2) == nil {
			t.Fatal("sector accepted for another cache or index")
		}
	})
}

// reservedOffsets returns offsets of two-byte windows covering the reserved
// bytes of an encoded s: after the core count, and in each core record
// (bytes 2-3 and 29-31).
func reservedOffsets(s *metadata.Superblock) []int {
	offs := []int{146}
	off := 148
	for _, c := range s.Cores {
		offs = append(offs, off+2, off+29, off+30)
		off += 43 + len(c.CoreName) + len(c.VolumeName) + len(c.Identity)
	}
	return offs
}
