package vbdev_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/google/uuid"

	"blockcache/internal/bdev"
	"blockcache/internal/bdev/malloc"
	"blockcache/internal/ocf/metadata"
	"blockcache/internal/vbdev"
)

// dirtyData is what damagedCache writes to its volume, dirty in the cache.
var dirtyData = bytes.Repeat([]byte{0x5a}, 64<<10)

// damagedCache returns a write-back cache device holding dirtyData for the
// core device Core, stopped cleanly, whose first entry sector (the entries
// of lines 0..48) is then overwritten: loading it fails on that sector.
// repair writes the sector back.
func damagedCache(t *testing.T) (cache, core *malloc.Device, repair func()) {
	t.Helper()
	e := newEnv(t)
	cache, core = e.malloc("Cache", 8), e.malloc("Core", 16)
	e.create("V", "wb", "Cache", "Core")
	vol, err := e.reg.Lookup("V")
	if err != nil {
		t.Fatal(err)
	}
	if err := vol.WriteAt(dirtyData, 0, false); err != nil {
		t.Fatal(err)
	}
	if err := e.m.Shutdown(false); err != nil {
		t.Fatal(err)
	}
	sector := make([]byte, 512)
	if err := cache.ReadAt(sector, metadata.SuperblockArea); err != nil {
		t.Fatal(err)
	}
	if err := cache.WriteAt(bytes.Repeat([]byte{0xff}, 512), metadata.SuperblockArea, false); err != nil {
		t.Fatal(err)
	}
	return cache, core, func() {
		if err := cache.WriteAt(sector, metadata.SuperblockArea, false); err != nil {
			t.Fatal(err)
		}
	}
}

// register adds devices to e's registry, in order.
func (e *env) register(devs ...bdev.Device) {
	e.t.Helper()
	for _, d := range devs {
		if err := e.reg.Register(d); err != nil {
			e.t.Fatal(err)
		}
	}
}

// expectFailed checks that name is failed with a reason containing want,
// holds no claim and is not registered as a bdev.
func (e *env) expectFailed(name, want string) vbdev.Info {
	e.t.Helper()
	in, err := e.m.Get(name)
	if err != nil {
		e.t.Fatal(err)
	}
	if in.State != vbdev.StateFailed || in.Started || in.Err == nil || !strings.Contains(in.Err.Error(), want) {
		e.t.Fatalf("%s: state %v, err %v; want failed with %q", name, in.State, in.Err, want)
	}
	if in.CacheAttached || in.CoreAttached {
		e.t.Errorf("%s: failed but attached: %+v", name, in)
	}
	for _, base := range []string{in.CacheBdev, in.CoreBdev} {
		if owner, ok := e.reg.ClaimOwner(base); ok && owner == "bdev_ocf" {
			e.t.Errorf("%s: failed but its base %s is still claimed", name, base)
		}
	}
	if _, err := e.reg.Lookup(name); err == nil {
		e.t.Errorf("%s: failed but registered", name)
	}
	return in
}

// TestRestoreKeepsFailedVbdev: at start-up a vbdev whose cache cannot be
// loaded is kept, failed, with the reason, whichever order the bases come
// in (examine re-creates the vbdev from the intact superblock first); a
// runtime create naming it retries and fails again, changing nothing;
// once the device is repaired a retry loads the cache, dirty data and all;
// and failed vbdevs are left out of CreateParams but listed.
func TestRestoreKeepsFailedVbdev(t *testing.T) {
	for _, order := range []string{"cache first", "core first"} {
		t.Run(order, func(t *testing.T) {
			cache, core, repair := damagedCache(t)
			e := newEnv(t)
			if order == "cache first" {
				e.register(cache, core)
			} else {
				e.register(core, cache)
			}
			p := vbdev.Params{Name: "V", Mode: "wb", CacheBdev: "Cache", CoreBdev: "Core"}
			v, err := e.m.Restore(p)
			if v == nil || err == nil || !strings.Contains(err.Error(), "entry sector 0") {
				t.Fatalf("Restore on a damaged cache: %v, %v; want the vbdev and the load error", v, err)
			}
			e.expectFailed("V", "entry sector 0")
			if _, err := e.m.Stats("V"); !errors.Is(err, vbdev.ErrNotStarted) || !strings.Contains(err.Error(), "its start failed") {
				t.Errorf("stats of a failed vbdev: %v", err)
			}
			if got := e.m.CreateParams(); len(got) != 0 {
				t.Errorf("CreateParams lists a failed vbdev: %+v", got)
			}
			if got := e.m.List(""); len(got) != 1 || got[0].Name != "V" {
				t.Errorf("List: %+v", got)
			}

			// The name and the core stay reserved.
			if _, err := e.m.Create(vbdev.Params{Name: "V2", Mode: "wb", CacheBdev: "Other", CoreBdev: "Core"}); !errors.Is(err, bdev.ErrDeviceClaimed) {
				t.Errorf("a second vbdev on the failed one's core: %v", err)
			}
			if _, err := e.m.Create(vbdev.Params{Name: "V", Mode: "wb", CacheBdev: "Other", CoreBdev: "Core9"}); !errors.Is(err, vbdev.ErrNameExists) {
				t.Errorf("another vbdev under the failed one's name: %v", err)
			}

			// A plain retry fails the same way and keeps the old mode.
			if _, err := e.m.Create(vbdev.Params{Name: "V", Mode: "wt", CacheBdev: "Cache", CoreBdev: "Core"}); err == nil {
				t.Fatal("retry without force on the damaged cache succeeded")
			}
			if in := e.expectFailed("V", "entry sector 0"); in.Mode != "wb" {
				t.Errorf("a failed retry changed the mode to %s", in.Mode)
			}

			repair()
			if _, err := e.m.Create(p); err != nil {
				t.Fatalf("retry after the repair: %v", err)
			}
			if in, _ := e.m.Get("V"); in.State != vbdev.StateStarted || in.Err != nil || !e.started("V") {
				t.Fatalf("after the retry: %+v", in)
			}
			vol, _ := e.reg.Lookup("V")
			got := make([]byte, len(dirtyData))
			if err := vol.ReadAt(got, 0); err != nil || !bytes.Equal(got, dirtyData) {
				t.Fatalf("the loaded volume does not read the dirty data back (%v)", err)
			}
			if st, _ := e.m.Stats("V"); st.Usage.Dirty == 0 {
				t.Errorf("no dirty data after loading: %+v", st.Usage)
			}
		})
	}
}

// TestCreateFailureLeavesNothing: at run time a create whose start fails
// answers the error and leaves nothing (SPDK's behaviour); Restore keeps
// the same vbdev, failed, and Delete removes it.
func TestCreateFailureLeavesNothing(t *testing.T) {
	e := newEnv(t)
	e.malloc("Cache", 8)
	e.malloc("Core", 16)
	other, err := e.reg.Claim("Core", "someone", func() {})
	if err != nil {
		t.Fatal(err)
	}
	p := vbdev.Params{Name: "V", Mode: "wt", CacheBdev: "Cache", CoreBdev: "Core"}
	if _, err := e.m.Create(p); !errors.Is(err, bdev.ErrDeviceClaimed) {
		t.Fatalf("create on a claimed core: %v", err)
	}
	if _, err := e.m.Get("V"); !errors.Is(err, vbdev.ErrNoSuchVbdev) {
		t.Fatalf("a failed create left the vbdev: %v", err)
	}
	if _, claimed := e.reg.ClaimOwner("Cache"); claimed {
		t.Fatal("a failed create left the cache claimed")
	}

	if _, err := e.m.Restore(p); !errors.Is(err, bdev.ErrDeviceClaimed) {
		t.Fatalf("restore on a claimed core: %v", err)
	}
	e.expectFailed("V", "someone")
	other.Release()
	if err := e.m.Delete("V"); err != nil {
		t.Fatalf("delete a failed vbdev: %v", err)
	}
	if got := e.m.List(""); len(got) != 0 {
		t.Fatalf("after delete: %+v", got)
	}
	// Nothing of it is left: the bases can be used again.
	e.create("V", "wt", "Cache", "Core")
	if !e.started("V") {
		t.Fatal("a new vbdev on the bases of a deleted failed one did not start")
	}
}

// TestWaitingThenFailed: a vbdev waiting for its cache fails when the cache
// arrives damaged, and stays (it was created before); an unrelated bdev
// does not retry it; the cache added again, repaired, does.
func TestWaitingThenFailed(t *testing.T) {
	cache, core, _ := damagedCache(t)
	e := newEnv(t)
	e.register(core)
	e.create("V", "wb", "Cache", "Core")
	if in, _ := e.m.Get("V"); in.State != vbdev.StateWaiting {
		t.Fatalf("without its cache: %v", in.State)
	}
	e.register(cache)
	first := e.expectFailed("V", "entry sector 0")

	e.malloc("Unrelated", 1)
	if in := e.expectFailed("V", "entry sector 0"); in.Err != first.Err {
		t.Errorf("an unrelated bdev retried the failed vbdev: %v, was %v", in.Err, first.Err)
	}

	// The operator wipes the damaged metadata and adds the device again:
	// a blank device initialises, and the vbdev starts.
	if _, err := e.reg.Unregister("Cache"); err != nil {
		t.Fatal(err)
	}
	blank, err := malloc.New("Cache", uuid.Nil, 512, 8<<20/512)
	if err != nil {
		t.Fatal(err)
	}
	e.register(blank)
	if !e.started("V") {
		in, _ := e.m.Get("V")
		t.Fatalf("re-adding the cache did not retry the start: %+v", in)
	}
}

// TestStateStrings pins the names bdev_ocf_get_bdevs and cache list use.
func TestStateStrings(t *testing.T) {
	for s, want := range map[vbdev.State]string{vbdev.StateWaiting: "waiting", vbdev.StateStarted: "started", vbdev.StateFailed: "failed"} {
		if s.String() != want {
			t.Errorf("%d.String() = %q, want %q", s, s.String(), want)
		}
	}
}
