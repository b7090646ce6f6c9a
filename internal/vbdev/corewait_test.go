package vbdev_test

import (
	"errors"
	"strings"
	"testing"

	"blockcache/internal/bdev"
	"blockcache/internal/vbdev"
)

// Two vbdevs may wait for the same missing core, as SPDK's
// test/ocf/management/multicore.sh does: the first created claims it when
// it appears and starts, the other waits until the first is deleted.
func TestTwoVbdevsWaitForOneCore(t *testing.T) {
	e := newEnv(t)
	e.malloc("Cache", 8)
	e.create("C1", "wt", "Cache", "Core")
	e.create("C2", "wt", "Cache", "Core")
	for _, name := range []string{"C1", "C2"} {
		if e.started(name) {
			t.Fatalf("%s started without its core", name)
		}
	}

	e.malloc("Core", 16)
	if !e.started("C1") {
		t.Fatal("C1, created first, did not start when the core appeared")
	}
	if e.started("C2") {
		t.Fatal("C2 started on a core C1 holds")
	}
	if in, _ := e.m.Get("C2"); in.State != vbdev.StateWaiting {
		t.Fatalf("C2 is %v, want waiting", in.State)
	}
	// A third create naming the now-held core is refused, as before.
	_, err := e.m.Create(vbdev.Params{Name: "C3", Mode: "wt", CacheBdev: "Cache", CoreBdev: "Core"})
	if !errors.Is(err, bdev.ErrDeviceClaimed) {
		t.Fatalf("create on a held core: %v, want ErrDeviceClaimed", err)
	}

	if err := e.m.Delete("C1"); err != nil {
		t.Fatal(err)
	}
	if !e.started("C2") {
		t.Fatal("C2 did not start once C1 was deleted")
	}
	if owner, ok := e.reg.ClaimOwner("Core"); !ok || owner != "bdev_ocf" {
		t.Fatalf("core claimed=%v by %q", ok, owner)
	}
	if err := e.m.Delete("C2"); err != nil {
		t.Fatal(err)
	}
	if _, ok := e.reg.ClaimOwner("Core"); ok {
		t.Fatal("core still claimed after both vbdevs were deleted")
	}
}

// Two vbdevs waiting for one missing core shut down cleanly, and either can
// be deleted while both wait.
func TestTwoWaitingVbdevsDeleteAndShutdown(t *testing.T) {
	e := newEnv(t)
	e.malloc("Cache", 8)
	e.create("C1", "wt", "Cache", "NonExisting")
	e.create("C2", "wt", "Cache", "NonExisting")
	if err := e.m.Delete("C2"); err != nil {
		t.Fatal(err)
	}
	e.create("C2", "wt", "Cache", "NonExisting")
	if err := e.m.Shutdown(false); err != nil {
		t.Fatal(err)
	}
	if len(e.m.List("")) != 0 {
		t.Fatalf("vbdevs left after shutdown: %+v", e.m.List(""))
	}
}

// force reinitialises a cache device whose superblock loads but whose
// entries are damaged (the load fails); without force the create is
// refused and says how to proceed.
func TestForceReinitialisesDamagedEntries(t *testing.T) {
	cache, core, _ := damagedCache(t)
	e := newEnv(t)
	e.register(cache, core)
	p := vbdev.Params{Name: "V2", Mode: "wt", CacheBdev: "Cache", CoreBdev: "Core"}
	for _, v := range e.m.List("") {
		// Examine re-created V from the intact superblock, and failed.
		if err := e.m.Delete(v.Name); err != nil {
			t.Fatal(err)
		}
	}
	_, err := e.m.Create(p)
	if err == nil || !strings.Contains(err.Error(), "pass force") {
		t.Fatalf("create over damaged entries without force: %v", err)
	}
	p.Force = true
	if _, err := e.m.Create(p); err != nil {
		t.Fatalf("create with force: %v", err)
	}
	if !e.started("V2") {
		t.Fatal("V2 not started after force")
	}
}
