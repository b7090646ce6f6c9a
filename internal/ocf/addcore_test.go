package ocf_test

import (
	"testing"

	"github.com/google/uuid"

	"blockcache/internal/bdev"
	"blockcache/internal/bdev/errinj"
	"blockcache/internal/bdev/malloc"
	"blockcache/internal/ocf"
	"blockcache/internal/ocf/metadata"
	"blockcache/internal/ocf/ocftest"
)

// recordedIDs returns the ids of the cores c records, attached or not.
func recordedIDs(c *ocf.Cache) []ocf.CoreID {
	var ids []ocf.CoreID
	for _, co := range c.Cores() {
		ids = append(ids, co.ID())
	}
	for _, r := range c.Detached() {
		ids = append(ids, ocf.CoreID(r.ID))
	}
	return ids
}

func expectIDs(t *testing.T, what string, got []ocf.CoreID, want ...ocf.CoreID) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: cores %v, want %v", what, got, want)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("%s: cores %v, want %v", what, got, want)
		}
	}
}

// TestAddCoreMetadataWriteFails: a new core whose superblock write fails
// is not added: AddCore returns EIO, the cache has neither the core nor its
// record, in memory or on the device (also when the first superblock copy
// was written and the second failed), and the same core is added once the
// device works.
func TestAddCoreMetadataWriteFails(t *testing.T) {
	superblockWrite := errinj.And(errinj.Writes(), errinj.InRange(0, metadata.SuperblockArea))
	for _, tc := range []struct {
		name string
		pred errinj.Predicate
	}{
		{"every copy fails", superblockWrite},
		{"second copy fails", errinj.And(superblockWrite, errinj.OnIndex(1))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fail := &errinj.Toggle{Injector: errinj.ErrInjected.If(tc.pred)}
			env := ocftest.New(t, ocftest.Options{Lines: 16, Mode: ocf.ModeWB, SeqCutoff: ocf.CutoffNever{},
				WrapCache: func(d bdev.Device) bdev.Device { return errinj.Wrap(d, fail) }})
			c := env.Cache
			dev, err := malloc.New("core1", uuid.Nil, 512, 1<<20/512)
			if err != nil {
				t.Fatal(err)
			}
			cfg := ocf.CoreConfig{ID: 1, Device: dev, Volume: bdev.Info{Name: "cache1"}}
			fail.On()
			co, err := c.AddCore(cfg)
			fail.Off()
			expectEIO(t, "add core", err)
			if co != nil {
				t.Fatalf("failed add core returned core %d", co.ID())
			}
			expectIDs(t, "in memory after the failed add", recordedIDs(c), 0)
			expectIDs(t, "on the device after the failed add", recordedIDs(reloaded(t, env)), 0)
			if s := c.Stats(); s.Usage.Occupancy != 0 {
				t.Fatalf("after the failed add: occupancy %d, want 0", s.Usage.Occupancy)
			}

			co, err = c.AddCore(cfg)
			if err != nil {
				t.Fatalf("add core once the device works: %v", err)
			}
			volWrite(t, co, tagged('N', 4096, 4096), 4096, false)
			expectBytes(t, "read back", volRead(t, co, 4096, 4096), tagged('N', 4096, 4096))
			expectIDs(t, "in memory after the add", recordedIDs(c), 0, 1)
			expectIDs(t, "on the device after the add", recordedIDs(reloaded(t, env)), 0, 1)
		})
	}
}

// TestAddCoreReattachMetadataWriteFails: re-attaching a detached core whose
// superblock write fails leaves the core detached, with its record (the
// volume name it had) and its dirty data; once the device works the
// re-attach brings the data back.
func TestAddCoreReattachMetadataWriteFails(t *testing.T) {
	fail := &errinj.Toggle{Injector: errinj.ErrInjected.If(errinj.And(errinj.Writes(), errinj.InRange(0, metadata.SuperblockArea)))}
	env := ocftest.New(t, ocftest.Options{Lines: 16, Mode: ocf.ModeWB, SeqCutoff: ocf.CutoffNever{},
		WrapCache: func(d bdev.Device) bdev.Device { return errinj.Wrap(d, fail) }})
	c, co := env.Cache, env.Cores[0]
	volWrite(t, co, tagged('D', 0, 4096), 0, false)
	dirty := c.Stats().Usage.Dirty
	if dirty == 0 {
		t.Fatal("wb write left nothing dirty")
	}
	if err := c.RemoveCore(co, false); err != nil {
		t.Fatal(err)
	}
	cfg := ocf.CoreConfig{ID: 0, Device: env.CoreDevs[0], Volume: bdev.Info{Name: "renamed"}}
	fail.On()
	_, err := c.AddCore(cfg)
	fail.Off()
	expectEIO(t, "re-attach", err)
	if n := len(c.Cores()); n != 0 {
		t.Fatalf("after the failed re-attach: %d cores attached, want 0", n)
	}
	det := c.Detached()
	if len(det) != 1 || det[0].ID != 0 || det[0].VolumeName != "cache0" {
		t.Fatalf("after the failed re-attach: detached %+v, want core 0 with volume name cache0", det)
	}
	if got := c.Stats().Usage.Dirty; got != dirty {
		t.Fatalf("after the failed re-attach: dirty %d, want %d", got, dirty)
	}
	if err := co.WriteAt(tagged('X', 0, 4096), 0, false); err == nil {
		t.Fatal("write to the old volume of a detached core succeeded")
	}

	co, err = c.AddCore(cfg)
	if err != nil {
		t.Fatalf("re-attach once the device works: %v", err)
	}
	expectBytes(t, "dirty data after the re-attach", volRead(t, co, 0, 4096), tagged('D', 0, 4096))
	if got := co.Info().Name; got != "renamed" {
		t.Fatalf("volume name %q after the re-attach, want renamed", got)
	}
}
