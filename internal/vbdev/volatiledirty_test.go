package vbdev_test

import (
	"errors"
	"strings"
	"testing"

	"blockcache/internal/vbdev"
)

// TestVolatileDirtyMetadataPerCache: bdev_ocf_create's
// volatile_dirty_metadata reaches the cache it initialises, is shown and
// re-created by CreateParams; another vbdev on the cache may omit it but
// not ask for it on a cache without it; a restart loads the cache with the
// choice it recorded, whatever the create says.
func TestVolatileDirtyMetadataPerCache(t *testing.T) {
	e := newEnv(t)
	cache := e.malloc("Cache", 8)
	core := e.malloc("Core", 4)
	e.malloc("Core2", 4)
	e.malloc("DCache", 8)
	e.malloc("DCore", 4)
	e.malloc("DCore2", 4)
	if _, err := e.m.Create(vbdev.Params{Name: "V", Mode: "wb", CacheBdev: "Cache", CoreBdev: "Core", VolatileDirtyMetadata: true}); err != nil {
		t.Fatal(err)
	}
	e.create("D", "wb", "DCache", "DCore")
	e.create("V2", "wb", "Cache", "Core2") // not asking: takes the cache as it is
	for name, want := range map[string]bool{"V": true, "V2": true, "D": false} {
		if in, _ := e.m.Get(name); !in.Started || in.VolatileDirtyMetadata != want {
			t.Errorf("%s: %+v, want started with VolatileDirtyMetadata %v", name, in, want)
		}
	}
	for _, p := range e.m.CreateParams() {
		if want := p.CacheBdev == "Cache"; p.VolatileDirtyMetadata != want {
			t.Errorf("CreateParams %s: VolatileDirtyMetadata %v, want %v", p.Name, p.VolatileDirtyMetadata, want)
		}
	}
	_, err := e.m.Create(vbdev.Params{Name: "D2", Mode: "wb", CacheBdev: "DCache", CoreBdev: "DCore2", VolatileDirtyMetadata: true})
	if !errors.Is(err, vbdev.ErrInvalidParam) || !strings.Contains(err.Error(), "volatile_dirty_metadata is per cache") {
		t.Fatalf("asking for volatile dirty metadata on a cache without it: %v, want ErrInvalidParam naming it", err)
	}

	if err := e.m.Shutdown(false); err != nil {
		t.Fatal(err)
	}
	e2 := newEnv(t)
	e2.register(cache, core)
	e2.create("V", "wb", "Cache", "Core") // without the flag: the recorded choice wins
	if in, _ := e2.m.Get("V"); !in.Started || !in.VolatileDirtyMetadata {
		t.Fatalf("after restart: %+v, want the recorded volatile dirty metadata", in)
	}
}
