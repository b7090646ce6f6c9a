package vbdev_test

import (
	"errors"
	"testing"

	"blockcache/internal/bdev"
	"blockcache/internal/ocf"
	"blockcache/internal/vbdev"
)

// squatVolumeName registers a bdev under the name of the waiting vbdev
// name, so that the volume's registration fails once its core is added.
func (e *env) squatVolumeName(name string) {
	e.t.Helper()
	e.malloc(name, 1)
	if in, err := e.m.Get(name); err != nil || in.State != vbdev.StateWaiting {
		e.t.Fatalf("%s after a bdev took its name: %+v, %v; want waiting", name, in, err)
	}
}

// expectRegisterFailed checks that name failed to start because its
// volume could not be registered.
func (e *env) expectRegisterFailed(name string) {
	e.t.Helper()
	in, err := e.m.Get(name)
	if err != nil {
		e.t.Fatal(err)
	}
	if in.State != vbdev.StateFailed || !errors.Is(in.Err, bdev.ErrExists) {
		e.t.Fatalf("%s with its name taken: state %v, err %v; want failed with ErrExists", name, in.State, in.Err)
	}
	if in.CacheAttached || in.CoreAttached {
		e.t.Fatalf("%s: failed but attached: %+v", name, in)
	}
}

// recordedCores returns the core bdev names the cache device's superblock
// records.
func (e *env) recordedCores(cache string) []string {
	e.t.Helper()
	dev, err := e.reg.Lookup(cache)
	if err != nil {
		e.t.Fatal(err)
	}
	sb, err := ocf.Probe(dev)
	if err != nil {
		e.t.Fatalf("probe %s: %v", cache, err)
	}
	var names []string
	for _, r := range sb.Cores {
		names = append(names, r.CoreName)
	}
	return names
}

// TestRegisterFailureDropsNewCore: a vbdev whose volume cannot be
// registered (a bdev took its name while it waited for its core) leaves no
// record of its new core in the cache's metadata, so that the cache device
// can later cache another core.
func TestRegisterFailureDropsNewCore(t *testing.T) {
	e := newEnv(t)
	e.malloc("Cache", 8)
	e.create("V", "wt", "Cache", "Core")
	e.squatVolumeName("V")
	e.malloc("Core", 4)
	e.expectRegisterFailed("V")
	if cores := e.recordedCores("Cache"); len(cores) != 0 {
		t.Fatalf("cache device records cores %q after V's registration failed, want none", cores)
	}

	if err := e.m.Delete("V"); err != nil {
		t.Fatal(err)
	}
	e.malloc("Core2", 4)
	e.create("W", "wt", "Cache", "Core2")
	if !e.started("W") {
		t.Fatal("W not started on the cache V failed on")
	}
	if cores := e.recordedCores("Cache"); len(cores) != 1 || cores[0] != "Core2" {
		t.Fatalf("cache device records cores %q, want only Core2", cores)
	}
}

// TestRegisterFailureKeepsRecordedCore: a vbdev coming back to a core the
// cache recorded, with dirty data, whose volume cannot be registered only
// detaches the core again: the record and the dirty data stay, and the
// vbdev serves them once its name is free.
func TestRegisterFailureKeepsRecordedCore(t *testing.T) {
	c := newCoreRemoved(t)
	c.squatVolumeName("V")
	c.register(c.core)
	c.expectRegisterFailed("V")
	if c.coreHas() {
		t.Fatal("the dirty data was written to the core when V's registration failed")
	}
	if cores := c.recordedCores("Cache"); len(cores) != 1 || cores[0] != "Core" {
		t.Fatalf("cache device records cores %q after V's registration failed, want Core", cores)
	}

	if _, err := c.reg.Unregister("V"); err != nil {
		t.Fatal(err)
	}
	c.create("V", "wb", "Cache", "Core")
	if !c.started("V") {
		t.Fatal("V not started once its name was free")
	}
	c.checkVolume("V after its name was freed")
}
