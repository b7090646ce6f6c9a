package vbdev_test

import (
	"errors"
	"syscall"
	"testing"

	"blockcache/internal/bdev"
	"blockcache/internal/vbdev"
)

// readOnlyDev is a device that reports itself read-only, as a file opened
// read-only or a wrapper over one does.
type readOnlyDev struct{ bdev.Device }

func (d readOnlyDev) Info() bdev.Info {
	in := d.Device.Info()
	in.ReadOnly = true
	return in
}

// TestReadOnlyCoreRefused: a read-only core bdev is refused with EROFS,
// whether it exists at create or appears while the vbdev waits; nothing
// stays claimed, and the cache takes a writable core afterwards.
func TestReadOnlyCoreRefused(t *testing.T) {
	e := newEnv(t)
	e.malloc("Cache", 8)
	ro := readOnlyDev{e.mallocUnregistered("RO", 4)}
	if err := e.reg.Register(ro); err != nil {
		t.Fatal(err)
	}
	_, err := e.m.Create(vbdev.Params{Name: "Vol", Mode: "wb", CacheBdev: "Cache", CoreBdev: "RO"})
	if !errors.Is(err, syscall.EROFS) {
		t.Fatalf("create over a read-only core: %v, want EROFS", err)
	}
	if _, err := e.m.Get("Vol"); !errors.Is(err, vbdev.ErrNoSuchVbdev) {
		t.Fatalf("Vol after a refused create: %v, want ErrNoSuchVbdev", err)
	}
	for _, name := range []string{"Cache", "RO"} {
		if owner, held := e.reg.ClaimOwner(name); held {
			t.Fatalf("%s still claimed by %q after a refused create", name, owner)
		}
	}

	// Waiting for a core that then appears read-only: the start fails.
	e.create("Vol2", "wb", "Cache", "Later")
	if err := e.reg.Register(readOnlyDev{e.mallocUnregistered("Later", 4)}); err != nil {
		t.Fatal(err)
	}
	in, err := e.m.Get("Vol2")
	if err != nil {
		t.Fatal(err)
	}
	if in.State != vbdev.StateFailed || !errors.Is(in.Err, syscall.EROFS) || in.CoreAttached {
		t.Fatalf("Vol2 after its core appeared read-only: %+v; want failed with EROFS, core not attached", in)
	}

	e.malloc("Core", 4)
	e.create("Vol3", "wb", "Cache", "Core")
	if !e.started("Vol3") {
		t.Fatal("a writable core on the same cache did not start")
	}
}
