package vbdev_test

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"testing"

	"github.com/google/uuid"

	"blockcache/internal/bdev"
	"blockcache/internal/bdev/malloc"
	"blockcache/internal/vbdev"
)

type env struct {
	t   *testing.T
	reg *bdev.Registry
	m   *vbdev.Manager
}

func newEnv(t *testing.T) *env {
	reg := bdev.NewRegistry()
	m := vbdev.NewManager(reg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	t.Cleanup(m.Close)
	return &env{t: t, reg: reg, m: m}
}

func (e *env) malloc(name string, mib int) *malloc.Device {
	e.t.Helper()
	d := e.mallocUnregistered(name, mib)
	if err := e.reg.Register(d); err != nil {
		e.t.Fatal(err)
	}
	return d
}

// mallocUnregistered makes a RAM bdev without registering it.
func (e *env) mallocUnregistered(name string, mib int) *malloc.Device {
	e.t.Helper()
	d, err := malloc.New(name, uuid.Nil, 512, uint64(mib)<<20/512)
	if err != nil {
		e.t.Fatal(err)
	}
	return d
}

// sharedCache registers the RAM bdevs of a cache shared by two cores:
// Cache (8 MiB), Core1 and Core2 (4 MiB each).
func (e *env) sharedCache() (cache, core1, core2 *malloc.Device) {
	e.t.Helper()
	return e.malloc("Cache", 8), e.malloc("Core1", 4), e.malloc("Core2", 4)
}

func (e *env) create(name, mode, cache, core string) {
	e.t.Helper()
	if _, err := e.m.Create(vbdev.Params{Name: name, Mode: mode, CacheBdev: cache, CoreBdev: core}); err != nil {
		e.t.Fatalf("create %s: %v", name, err)
	}
}

func (e *env) started(name string) bool {
	e.t.Helper()
	in, err := e.m.Get(name)
	if err != nil {
		e.t.Fatal(err)
	}
	_, lookErr := e.reg.Lookup(name)
	if in.Started != (lookErr == nil) {
		e.t.Fatalf("%s: started=%v but registered=%v", name, in.Started, lookErr == nil)
	}
	return in.Started
}

func TestCreateStartsAndClaims(t *testing.T) {
	e := newEnv(t)
	e.malloc("Cache", 8)
	e.malloc("Core", 16)
	e.create("C1", "wt", "Cache", "Core")
	if !e.started("C1") {
		t.Fatal("C1 not started with both bases present")
	}
	for _, base := range []string{"Cache", "Core"} {
		if owner, ok := e.reg.ClaimOwner(base); !ok || owner != "bdev_ocf" {
			t.Errorf("%s: claimed=%v owner=%q", base, ok, owner)
		}
	}
	d, _ := e.reg.Lookup("C1")
	if in := d.Info(); in.NumBlocks != 16<<20/512 || in.ProductName != vbdev.ProductName {
		t.Errorf("volume info %+v", in)
	}
	if !d.Info().Abilities.Discard {
		t.Error("volume on a malloc core should discard")
	}
	if _, err := e.m.Create(vbdev.Params{Name: "C1", Mode: "wt", CacheBdev: "Cache", CoreBdev: "Other"}); !errors.Is(err, vbdev.ErrNameExists) {
		t.Errorf("duplicate name: %v", err)
	}
	if _, err := e.m.Create(vbdev.Params{Name: "Core", Mode: "wt", CacheBdev: "X", CoreBdev: "Y"}); !errors.Is(err, vbdev.ErrNameExists) {
		t.Errorf("name of an existing bdev: %v", err)
	}
	if _, err := e.m.Create(vbdev.Params{Name: "C2", Mode: "xx", CacheBdev: "X", CoreBdev: "Y"}); !errors.Is(err, vbdev.ErrInvalidParam) {
		t.Errorf("bad mode: %v", err)
	}
	if _, err := e.m.Create(vbdev.Params{Name: "C2", Mode: "wt", LineSizeKiB: 3, CacheBdev: "X", CoreBdev: "Y"}); !errors.Is(err, vbdev.ErrInvalidParam) {
		t.Errorf("bad line size: %v", err)
	}
}

func TestWaitsForBasesInAnyOrder(t *testing.T) {
	e := newEnv(t)
	e.create("C1", "wb", "Cache", "Core1")
	e.create("C2", "wb", "Cache", "Core2")
	if e.started("C1") || e.started("C2") {
		t.Fatal("started without bases")
	}
	e.malloc("Core2", 4)
	if in, _ := e.m.Get("C2"); in.Started || !in.CoreAttached || in.CacheAttached {
		t.Fatalf("after core2 arrives: %+v", in)
	}
	e.malloc("Cache", 8)
	if !e.started("C2") || e.started("C1") {
		t.Fatal("C2 should start once its cache appears, C1 still waits for its core")
	}
	e.malloc("Core1", 4)
	if !e.started("C1") {
		t.Fatal("C1 did not start when its core appeared")
	}
	if got := e.m.List("Cache"); len(got) != 2 || got[0].Name != "C1" || got[1].Name != "C2" {
		t.Fatalf("list by cache name: %+v", got)
	}
}

func TestSharedCacheConflicts(t *testing.T) {
	e := newEnv(t)
	e.sharedCache()
	if _, err := e.m.Create(vbdev.Params{Name: "C1", Mode: "wb", LineSizeKiB: 8, CacheBdev: "Cache", CoreBdev: "Core1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.m.Create(vbdev.Params{Name: "C2", Mode: "wt", CacheBdev: "Cache", CoreBdev: "Core2"}); !errors.Is(err, vbdev.ErrInvalidParam) {
		t.Errorf("conflicting mode: %v", err)
	}
	if _, err := e.m.Create(vbdev.Params{Name: "C2", Mode: "wb", LineSizeKiB: 16, CacheBdev: "Cache", CoreBdev: "Core2"}); !errors.Is(err, vbdev.ErrInvalidParam) {
		t.Errorf("conflicting line size: %v", err)
	}
	if _, err := e.reg.Lookup("C2"); err == nil {
		t.Error("failed create left a volume behind")
	}
	if owner, claimed := e.reg.ClaimOwner("Core2"); claimed {
		t.Errorf("failed create left Core2 claimed by %q", owner)
	}
	e.create("C2", "wb", "Cache", "Core2")
	if in, _ := e.m.Get("C2"); in.LineSizeKiB != 8 {
		t.Errorf("C2 line size %d, want the cache's 8", in.LineSizeKiB)
	}
}

func TestDeleteWritesBackAndReleases(t *testing.T) {
	e := newEnv(t)
	e.malloc("Cache", 8)
	core := e.malloc("Core", 4)
	e.create("C1", "wb", "Cache", "Core")
	vol, _ := e.reg.Lookup("C1")
	data := bytes.Repeat([]byte{0x5a}, 8192)
	if err := vol.WriteAt(data, 4096, false); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(data))
	if err := core.ReadAt(got, 4096); err != nil || bytes.Equal(got, data) {
		t.Fatalf("wb write reached the core before delete (err %v)", err)
	}
	if err := e.m.Delete("C1"); err != nil {
		t.Fatal(err)
	}
	if err := core.ReadAt(got, 4096); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("core lacks the dirty data after delete (err %v)", err)
	}
	for _, base := range []string{"Cache", "Core"} {
		if _, claimed := e.reg.ClaimOwner(base); claimed {
			t.Errorf("%s still claimed after delete", base)
		}
	}
	if len(e.m.List("")) != 0 {
		t.Error("vbdev still listed")
	}
	if err := e.m.Delete("C1"); !errors.Is(err, vbdev.ErrNoSuchVbdev) {
		t.Errorf("second delete: %v", err)
	}
}

func TestHotRemove(t *testing.T) {
	e := newEnv(t)
	e.sharedCache()
	e.create("C1", "wt", "Cache", "Core1")
	e.create("C2", "wt", "Cache", "Core2")

	if _, err := e.reg.Unregister("Core1"); err != nil {
		t.Fatal(err)
	}
	// C1 waits for its core, still on its cache (see TestCoreHotRemovedWaits).
	if in, err := e.m.Get("C1"); err != nil || in.State != vbdev.StateWaiting || !in.CoreRemoved || !in.CacheAttached || in.CoreAttached {
		t.Errorf("C1 after removal of its core: %+v, %v; want waiting, core removed, cache attached", in, err)
	}
	if e.started("C1") {
		t.Error("C1 still started without its core")
	}
	if !e.started("C2") {
		t.Error("C2 stopped when another core of its cache went")
	}
	if _, err := e.reg.Unregister("Cache"); err != nil {
		t.Fatal(err)
	}
	// A cache hot-remove takes every vbdev on it, the waiting C1 too.
	if got := e.m.List(""); len(got) != 0 {
		t.Errorf("vbdevs left after cache removal: %+v", got)
	}
	if _, claimed := e.reg.ClaimOwner("Core2"); claimed {
		t.Error("Core2 still claimed after its cache went")
	}
	if _, err := e.reg.Lookup("C2"); err == nil {
		t.Error("C2 volume still registered")
	}
}

// TestRestartLoadsCache: a manager shut down without write-back leaves the
// dirty data in the cache; a new manager over the same devices loads it,
// with the same volume UUID.
func TestRestartLoadsCache(t *testing.T) {
	e := newEnv(t)
	cache := e.malloc("Cache", 8)
	core := e.malloc("Core", 4)
	e.create("C1", "wb", "Cache", "Core")
	vol, _ := e.reg.Lookup("C1")
	id := vol.Info().UUID
	data := bytes.Repeat([]byte{0x77}, 4096)
	if err := vol.WriteAt(data, 0, false); err != nil {
		t.Fatal(err)
	}
	if err := e.m.Shutdown(false); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 4096)
	if err := core.ReadAt(got, 0); err != nil || bytes.Equal(got, data) {
		t.Fatalf("the core has the dirty data after a shutdown without write-back (err %v)", err)
	}

	e2 := newEnv(t)
	e2.register(cache, core)
	e2.create("C1", "wt", "Cache", "Core") // the recorded mode (wb) wins
	if in, _ := e2.m.Get("C1"); !in.Started || in.Mode != "wb" {
		t.Fatalf("after restart: %+v, want started in the recorded wb mode", in)
	}
	vol2, _ := e2.reg.Lookup("C1")
	if vol2.Info().UUID != id {
		t.Errorf("volume UUID %s after restart, want %s", vol2.Info().UUID, id)
	}
	if err := vol2.ReadAt(got, 0); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("dirty data lost across restart (err %v)", err)
	}
}

// TestForeignCacheNeedsForce: a cache device holding another cache's
// metadata is refused unless force is given.
func TestForeignCacheNeedsForce(t *testing.T) {
	e := newEnv(t)
	e.sharedCache()
	e.create("C1", "wb", "Cache", "Core1")
	if err := e.m.Shutdown(false); err != nil {
		t.Fatal(err)
	}
	_, err := e.m.Create(vbdev.Params{Name: "C2", Mode: "wt", CacheBdev: "Cache", CoreBdev: "Core2"})
	if !errors.Is(err, vbdev.ErrForeignCache) {
		t.Fatalf("create on a device holding another cache: %v, want ErrForeignCache", err)
	}
	if _, claimed := e.reg.ClaimOwner("Cache"); claimed {
		t.Error("refused create left the cache claimed")
	}
	if _, err := e.m.Create(vbdev.Params{Name: "C2", Mode: "wt", CacheBdev: "Cache", CoreBdev: "Core2", Force: true}); err != nil {
		t.Fatalf("create with force: %v", err)
	}
}

// TestExamineAutoLoads: a bdev holding cache metadata, registered with a
// manager that never heard of it, brings its vbdevs back by itself (in any
// order of cache and core), loading the data; a later bdev_ocf_create with
// the same parameters (a replayed config) adopts the vbdev.
func TestExamineAutoLoads(t *testing.T) {
	e := newEnv(t)
	cache, core1, core2 := e.sharedCache()
	e.create("C1", "wb", "Cache", "Core1")
	e.create("C2", "wb", "Cache", "Core2")
	data := bytes.Repeat([]byte{0x3c}, 4096)
	for _, name := range []string{"C1", "C2"} {
		vol, _ := e.reg.Lookup(name)
		if err := vol.WriteAt(data, 8192, false); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.m.Shutdown(false); err != nil {
		t.Fatal(err)
	}

	e2 := newEnv(t)
	e2.register(core1, cache, core2) // core first, then cache
	for _, name := range []string{"C1", "C2"} {
		if !e2.started(name) {
			t.Fatalf("%s not re-created and started from the cache metadata", name)
		}
		vol, _ := e2.reg.Lookup(name)
		got := make([]byte, 4096)
		if err := vol.ReadAt(got, 8192); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("%s: dirty data not loaded (err %v)", name, err)
		}
	}
	if in, _ := e2.m.Get("C1"); in.Mode != "wb" {
		t.Errorf("re-created in mode %s, want the recorded wb", in.Mode)
	}
	// A replayed config: the same create is accepted, a different one not.
	e2.create("C1", "wb", "Cache", "Core1")
	if _, err := e2.m.Create(vbdev.Params{Name: "C2", Mode: "wb", CacheBdev: "Cache", CoreBdev: "Core1"}); !errors.Is(err, vbdev.ErrNameExists) {
		t.Errorf("create with other bases over an auto-created vbdev: %v", err)
	}
	if len(e2.m.List("")) != 2 {
		t.Errorf("vbdevs: %+v", e2.m.List(""))
	}
}
