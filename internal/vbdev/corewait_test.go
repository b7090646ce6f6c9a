package vbdev_test

import (
	"errors"
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
