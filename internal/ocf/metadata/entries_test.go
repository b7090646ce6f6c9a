package metadata_test

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/google/uuid"

	"blockcache/internal/ocf/metadata"
)

// lineSectors are the sectors per line of every supported line size, 4 to
// 64 KiB.
var lineSectors = []int{8, 16, 32, 64, 128}

// randomEntry returns a random valid entry for lines of spl sectors: mapped
// three times in four, dirty a subset of valid, masks inside the line.
func randomEntry(r *rand.Rand, spl int) metadata.Entry {
	if r.IntN(4) == 0 {
		return metadata.Unmapped
	}
	full := mask(spl)
	e := metadata.Entry{Core: uint16(r.IntN(metadata.NoCore)), CoreLine: r.Uint32()}
	switch r.IntN(4) {
	case 0: // empty
	case 1:
		e.Valid = full
	default:
		e.Valid = [2]uint64{r.Uint64() & full[0], r.Uint64() & full[1]}
	}
	if r.IntN(3) > 0 {
		e.Dirty = [2]uint64{e.Valid[0] & r.Uint64(), e.Valid[1] & r.Uint64()}
	}
	return e
}

func TestSectorRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	id := uuid.New()
	for _, spl := range lineSectors {
		eps := metadata.EntriesPerSector(spl)
		for iter := range 50 {
			n := eps
			if iter%5 == 0 {
				n = r.IntN(eps + 1) // missing slots must come back Unmapped
			}
			entries := make([]metadata.Entry, n)
			for i := range entries {
				entries[i] = randomEntry(r, spl)
			}
			index := r.Uint32()
			b := make([]byte, metadata.SectorBytes)
			metadata.EncodeSector(b, index, id, spl, entries)
			out := make([]metadata.Entry, eps)
			if err := metadata.DecodeSector(b, index, id, spl, out); err != nil {
				t.Fatalf("spl %d iter %d: %v", spl, iter, err)
			}
			for i, got := range out {
				want := metadata.Unmapped
				if i < n {
					want = entries[i]
				}
				if got != want {
					t.Fatalf("spl %d iter %d slot %d: %+v, want %+v", spl, iter, i, got, want)
				}
				if got.Mapped() != (got.Core != metadata.NoCore) {
					t.Fatal("Mapped() disagrees with the core id")
				}
			}
		}
	}
}

// TestSectorEncodeOverwritesBuffer checks that EncodeSector does not depend
// on what the buffer held before.
func TestSectorEncodeOverwritesBuffer(t *testing.T) {
	id := uuid.New()
	entries := sampleEntries(16)
	clean := make([]byte, metadata.SectorBytes)
	metadata.EncodeSector(clean, 1, id, 16, entries)
	dirty := make([]byte, metadata.SectorBytes)
	for i := range dirty {
		dirty[i] = 0xA5
	}
	metadata.EncodeSector(dirty, 1, id, 16, entries)
	if string(clean) != string(dirty) {
		t.Fatal("EncodeSector output depends on the old buffer contents")
	}
}

func TestSectorRejects(t *testing.T) {
	id := uuid.MustParse("01234567-89ab-4cde-8f01-23456789abcd")
	for _, spl := range lineSectors {
		eps := metadata.EntriesPerSector(spl)
		out := make([]metadata.Entry, eps)
		enc := func(entries ...metadata.Entry) []byte {
			b := make([]byte, metadata.SectorBytes)
			metadata.EncodeSector(b, 5, id, spl, entries)
			return b
		}
		good := enc(sampleEntries(spl)...)
		other := id
		other[7] ^= 0x80
		sameTag := id
		sameTag[15] ^= 0x80
		last := metadata.Entry{Core: 1, Valid: mask(spl), Dirty: [2]uint64{1 << 0, 0}}
		// The line's last sector dirty but not valid: bit 7 of word 0 for 4 KiB
		// lines, bit 63 of word 1 for 64 KiB lines.
		lastSectorDirtyNotValid := metadata.Entry{Core: 4, Valid: mask(spl)}
		lastSectorDirtyNotValid.Valid[(spl-1)/64] &^= 1 << ((spl - 1) % 64)
		lastSectorDirtyNotValid.Dirty[(spl-1)/64] = 1 << ((spl - 1) % 64)
		lastDirtyNotValid := last
		lastDirtyNotValid.Valid[0] &^= 1
		for name, c := range map[string]struct {
			b     []byte
			index uint32
			id    uuid.UUID
		}{
			"zeroes (never written)":       {make([]byte, metadata.SectorBytes), 5, id},
			"truncated":                    {good[:metadata.SectorBytes-1], 5, id},
			"misdirected":                  {good, 6, id},
			"other cache":                  {good, 5, other},
			"dirty not valid":              {enc(metadata.Entry{Core: 2, Dirty: [2]uint64{1, 0}}), 5, id},
			"dirty not valid, last slot":   {enc(append(make([]metadata.Entry, eps-1), lastDirtyNotValid)...), 5, id},
			"dirty not valid, last sector": {enc(lastSectorDirtyNotValid), 5, id},
			"unmapped with a core line":    {enc(metadata.Entry{Core: metadata.NoCore, CoreLine: 9}), 5, id},
			"unmapped with valid data":     {enc(metadata.Entry{Core: metadata.NoCore, Valid: [2]uint64{1, 0}}), 5, id},
		} {
			if err := metadata.DecodeSector(c.b, c.index, c.id, spl, out); !metadata.IsCorrupt(err) {
				t.Errorf("spl %d, %s: Decode = %v, want a corruption error", spl, name, err)
			}
		}
		// The cache tag is the first 8 bytes of the UUID only, as format.go
		// documents.
		if err := metadata.DecodeSector(good, 5, sameTag, spl, out); err != nil {
			t.Errorf("spl %d: UUID differing after byte 8: %v", spl, err)
		}
		if err := metadata.DecodeSector(enc(append(make([]metadata.Entry, eps-1), last)...), 5, id, spl, out); err != nil {
			t.Errorf("spl %d: valid last slot: %v", spl, err)
		}
	}
}

// TestSectorEveryByteFlip flips each byte of encoded entry sectors in turn;
// every flip must be reported as corruption.
func TestSectorEveryByteFlip(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	id := uuid.New()
	for _, spl := range lineSectors {
		entries := make([]metadata.Entry, metadata.EntriesPerSector(spl))
		for i := range entries {
			entries[i] = randomEntry(r, spl)
		}
		b := make([]byte, metadata.SectorBytes)
		metadata.EncodeSector(b, 77, id, spl, entries)
		out := make([]metadata.Entry, len(entries))
		if err := metadata.DecodeSector(b, 77, id, spl, out); err != nil {
			t.Fatal(err)
		}
		for i := range b {
			for _, bit := range []byte{0x01, 0x80} {
				c := append([]byte(nil), b...)
				c[i] ^= bit
				if err := metadata.DecodeSector(c, 77, id, spl, out); !metadata.IsCorrupt(err) {
					t.Fatalf("spl %d: byte %d ^ %#x: Decode = %v, want a corruption error", spl, i, bit, err)
				}
			}
		}
	}
}

// TestSectorInconsistentSealed reseals sectors whose entries are
// inconsistent, so that the checks behind the checksum must catch them.
func TestSectorInconsistentSealed(t *testing.T) {
	id := uuid.New()
	for _, spl := range lineSectors {
		maskBytes := spl / 8
		for name, edit := range map[string]func(b []byte){
			"dirty bit without valid": func(b []byte) { b[16+8+maskBytes] |= 1; b[16+8] &^= 1 },
			"unmapped slot with line": func(b []byte) { binary.LittleEndian.PutUint32(b[16+metadata.EntrySize(spl):], 1) },
		} {
			t.Run(fmt.Sprintf("spl%d/%s", spl, name), func(t *testing.T) {
				b := make([]byte, metadata.SectorBytes)
				metadata.EncodeSector(b, 0, id, spl, []metadata.Entry{{Core: 3, Valid: mask(spl)}})
				edit(b)
				binary.LittleEndian.PutUint32(b, metadata.Checksum(b[4:]))
				out := make([]metadata.Entry, metadata.EntriesPerSector(spl))
				if err := metadata.DecodeSector(b, 0, id, spl, out); !metadata.IsCorrupt(err) {
					t.Fatalf("Decode = %v, want a corruption error", err)
				}
			})
		}
	}
}

func TestCount(t *testing.T) {
	for _, c := range []struct {
		m    [2]uint64
		want int
	}{
		{[2]uint64{}, 0},
		{mask(8), 8},
		{mask(128), 128},
		{[2]uint64{1 << 63, 1}, 2},
	} {
		if got := metadata.Count(c.m); got != c.want {
			t.Errorf("Count(%x) = %d, want %d", c.m, got, c.want)
		}
	}
}

// TestSectorTag checks the scan's view of an entry sector: the tag of a
// sealed sector at its own index, nothing for a zeroed, damaged or
// misplaced one, and decoding by tag alone.
func TestSectorTag(t *testing.T) {
	b := make([]byte, metadata.SectorBytes)
	metadata.EncodeSector(b, 9, sampleCacheID, 8, sampleEntries(8))
	tag, ok := metadata.SectorTag(b, 9)
	if !ok || tag != metadata.TagOf(sampleCacheID) {
		t.Fatalf("SectorTag = %v, %v; want %v", tag, ok, metadata.TagOf(sampleCacheID))
	}
	if got, want := tag.String(), "0f1e2d3c-4b5a-4978"; got != want {
		t.Errorf("tag renders as %q, want %q (the start of %s)", got, want, sampleCacheID)
	}
	if _, ok := metadata.SectorTag(b, 10); ok {
		t.Error("sector 9 accepted as sector 10")
	}
	if _, ok := metadata.SectorTag(make([]byte, metadata.SectorBytes), 0); ok {
		t.Error("zeroed sector accepted")
	}
	if _, ok := metadata.SectorTag(b[:100], 9); ok {
		t.Error("truncated sector accepted")
	}
	damaged := append([]byte(nil), b...)
	damaged[300] ^= 1
	if _, ok := metadata.SectorTag(damaged, 9); ok {
		t.Error("damaged sector accepted")
	}
	out := make([]metadata.Entry, metadata.EntriesPerSector(8))
	if err := metadata.DecodeSectorOfTag(b, 9, tag, 8, out); err != nil || out[1] != sampleEntries(8)[1] {
		t.Errorf("DecodeSectorOfTag = %v, slot 1 %+v", err, out[1])
	}
	if err := metadata.DecodeSectorOfTag(b, 9, tag+1, 8, out); !metadata.IsCorrupt(err) {
		t.Errorf("another tag: %v, want a corruption error", err)
	}
}
