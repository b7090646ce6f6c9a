package metadata_test

import (
	"bytes"
	"math/rand/v2"
	"testing"

	"github.com/google/uuid"

	"blockcache/internal/ocf/metadata"
)

// TestEditSectorMatchesEncode: replacing some entries of a sealed sector
// with EditSector gives the bytes of encoding the changed sector anew, for
// every line size, including entries that become unmapped.
func TestEditSectorMatchesEncode(t *testing.T) {
	id := uuid.New()
	rng := rand.New(rand.NewPCG(1, 2))
	for _, spl := range []int{8, 16, 32, 64, 128} {
		eps := metadata.EntriesPerSector(spl)
		entries := make([]metadata.Entry, eps)
		random := func() metadata.Entry {
			if rng.IntN(4) == 0 {
				return metadata.Unmapped
			}
			var valid [2]uint64
			for s := range spl {
				if rng.IntN(2) == 0 {
					valid[s/64] |= 1 << (s % 64)
				}
			}
			return metadata.Entry{Core: uint16(rng.IntN(4)), CoreLine: rng.Uint32(), Valid: valid,
				Dirty: [2]uint64{valid[0] & rng.Uint64(), valid[1] & rng.Uint64()}}
		}
		for i := range entries {
			entries[i] = random()
		}
		edited := make([]byte, metadata.SectorBytes)
		if err := metadata.EncodeSector(edited, 7, id, spl, entries); err != nil {
			t.Fatal(err)
		}
		for round := range 50 {
			w := metadata.EditSector(edited, 7, spl)
			for range 1 + rng.IntN(3) {
				slot := rng.IntN(eps)
				entries[slot] = random()
				if err := w.Put(slot, &entries[slot]); err != nil {
					t.Fatal(err)
				}
			}
			w.Seal()
			fresh := make([]byte, metadata.SectorBytes)
			if err := metadata.EncodeSector(fresh, 7, id, spl, entries); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(edited, fresh) {
				t.Fatalf("%d sectors a line, round %d: the edited sector differs from a fresh encoding", spl, round)
			}
		}
	}
}
