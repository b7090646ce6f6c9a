package vbdev_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"blockcache/internal/bdev/malloc"
	"blockcache/internal/vbdev"
)

// coreRemovedEnv is a wb vbdev V on Cache and Core with dirty data at 0
// and at 1 MiB, whose core bdev has just been hot-removed.
type coreRemovedEnv struct {
	*env
	core       *malloc.Device
	a, b       []byte
	volumeUUID string
}

func newCoreRemoved(t *testing.T) *coreRemovedEnv {
	t.Helper()
	e := newEnv(t)
	e.malloc("Cache", 8)
	core := e.malloc("Core", 4)
	e.create("V", "wb", "Cache", "Core")
	vol, err := e.reg.Lookup("V")
	if err != nil {
		t.Fatal(err)
	}
	c := &coreRemovedEnv{env: e, core: core, a: bytes.Repeat([]byte{0xa5}, 64<<10), b: bytes.Repeat([]byte{0x3c}, 8<<10),
		volumeUUID: vol.Info().UUID.String()}
	if err := vol.WriteAt(c.a, 0, false); err != nil {
		t.Fatal(err)
	}
	if err := vol.WriteAt(c.b, 1<<20, true); err != nil {
		t.Fatal(err)
	}
	if _, err := e.reg.Unregister("Core"); err != nil {
		t.Fatal(err)
	}
	return c
}

// coreHas reports whether the core device holds the writes.
func (c *coreRemovedEnv) coreHas() bool {
	c.t.Helper()
	got := make([]byte, len(c.a))
	if err := c.core.ReadAt(got, 0); err != nil {
		c.t.Fatal(err)
	}
	gotB := make([]byte, len(c.b))
	if err := c.core.ReadAt(gotB, 1<<20); err != nil {
		c.t.Fatal(err)
	}
	return bytes.Equal(got, c.a) && bytes.Equal(gotB, c.b)
}

// checkVolume reads the writes back through the started volume V.
func (c *coreRemovedEnv) checkVolume(what string) {
	c.t.Helper()
	vol, err := c.reg.Lookup("V")
	if err != nil {
		c.t.Fatalf("%s: %v", what, err)
	}
	got := make([]byte, len(c.a))
	gotB := make([]byte, len(c.b))
	if err := vol.ReadAt(got, 0); err != nil {
		c.t.Fatal(err)
	}
	if err := vol.ReadAt(gotB, 1<<20); err != nil {
		c.t.Fatal(err)
	}
	if !bytes.Equal(got, c.a) || !bytes.Equal(gotB, c.b) {
		c.t.Fatalf("%s: the volume does not read back what was written before the core went", what)
	}
}

// A wb vbdev whose core bdev is hot-removed waits for it, on its cache,
// which keeps running, claimed, with the core's dirty data; when a bdev of
// the core's name comes back the vbdev starts again by itself, under the
// same name and UUID, serves the dirty data, and a flush writes it to the
// core.
func TestCoreHotRemovedWaits(t *testing.T) {
	c := newCoreRemoved(t)
	in, err := c.m.Get("V")
	if err != nil {
		t.Fatalf("V forgotten after its core went: %v", err)
	}
	if in.State != vbdev.StateWaiting || in.Started || !in.CoreRemoved || in.CoreAttached || !in.CacheAttached {
		t.Fatalf("V after its core went: %+v; want waiting, core removed, cache attached", in)
	}
	if in.DirtyKeptBytes < int64(len(c.a)+len(c.b)) {
		t.Fatalf("dirty data kept: %d bytes, want at least the %d written", in.DirtyKeptBytes, len(c.a)+len(c.b))
	}
	if c.started("V") {
		t.Fatal("V still registered")
	}
	if owner, ok := c.reg.ClaimOwner("Cache"); !ok || owner != "bdev_ocf" {
		t.Fatalf("cache bdev claimed=%v by %q while it holds the removed core's dirty data", ok, owner)
	}
	if c.coreHas() {
		t.Fatal("the core device has the wb writes: the test proves nothing")
	}
	_, err = c.m.Stats("V")
	if !errors.Is(err, vbdev.ErrNotStarted) || !strings.Contains(err.Error(), `core bdev "Core" was removed`) {
		t.Fatalf("stats of V while its core is gone: %v", err)
	}
	// A second create of the name is refused; the vbdev is not lost.
	if _, err := c.m.Create(vbdev.Params{Name: "V", Mode: "wb", CacheBdev: "Cache", CoreBdev: "Core"}); !errors.Is(err, vbdev.ErrNameExists) {
		t.Fatalf("create of the waiting V: %v, want ErrNameExists", err)
	}

	if err := c.reg.Register(c.core); err != nil {
		t.Fatal(err)
	}
	if !c.started("V") {
		t.Fatal("V did not start when its core came back")
	}
	in, _ = c.m.Get("V")
	if in.CoreRemoved || in.DirtyKeptBytes != 0 {
		t.Fatalf("V started again but still says its core is removed: %+v", in)
	}
	vol, _ := c.reg.Lookup("V")
	if got := vol.Info().UUID.String(); got != c.volumeUUID {
		t.Fatalf("volume UUID %s after the come-back, was %s", got, c.volumeUUID)
	}
	st, err := c.m.Stats("V")
	if err != nil || st.Usage.Dirty == 0 {
		t.Fatalf("dirty data after the come-back: %+v, %v", st.Usage, err)
	}
	c.checkVolume("V started again")
	if c.coreHas() {
		t.Fatal("the core device has the writes before any flush")
	}

	if err := c.m.FlushStart("V", false); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		fs, err := c.m.FlushStatus("V")
		if err != nil {
			t.Fatal(err)
		}
		if !fs.InProgress {
			if fs.Err != nil {
				t.Fatalf("flush after the come-back: %v", fs.Err)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("flush still running after 10 s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if !c.coreHas() {
		t.Fatal("the flush did not write the kept dirty data to the core")
	}
	if st, _ := c.m.Stats("V"); st.Usage.Dirty != 0 {
		t.Fatalf("dirty after the flush: %+v", st.Usage)
	}
	if err := c.m.Delete("V"); err != nil {
		t.Fatal(err)
	}
}

// Deleting a vbdev whose core was hot-removed writes nothing (there is no
// core) and keeps the core's dirty data in the cache: the cache stops with
// its last vbdev, releasing the cache bdev, and a vbdev of the same core
// on the same cache loads it back.
func TestDeleteWhileCoreRemoved(t *testing.T) {
	c := newCoreRemoved(t)
	if err := c.m.Delete("V"); err != nil {
		t.Fatalf("delete while the core is gone: %v", err)
	}
	if _, err := c.m.Get("V"); !errors.Is(err, vbdev.ErrNoSuchVbdev) {
		t.Fatalf("V after its delete: %v", err)
	}
	if _, claimed := c.reg.ClaimOwner("Cache"); claimed {
		t.Fatal("cache bdev still claimed after its last vbdev was deleted")
	}
	if err := c.reg.Register(c.core); err != nil {
		t.Fatal(err)
	}
	if _, err := c.m.Get("V"); !errors.Is(err, vbdev.ErrNoSuchVbdev) {
		t.Fatalf("the deleted V came back with its core: %v", err)
	}
	if c.coreHas() {
		t.Fatal("the core device has the writes: nothing could have written them")
	}
	c.create("V", "wb", "Cache", "Core")
	c.checkVolume("V re-created on the cache that kept its core's data")
	if err := c.m.Delete("V"); err != nil {
		t.Fatal(err)
	}
	if !c.coreHas() {
		t.Fatal("the delete of the re-created V did not write the kept data back")
	}
}

// The same on a cache shared with a running vbdev: the cache keeps
// running with the deleted vbdev's core detached, and a vbdev re-created
// for that core joins it and gets the data back.
func TestDeleteWhileCoreRemovedSharedCache(t *testing.T) {
	c := newCoreRemoved(t)
	c.malloc("Other", 4)
	c.create("W", "wb", "Cache", "Other")
	if err := c.m.Delete("V"); err != nil {
		t.Fatal(err)
	}
	if !c.started("W") {
		t.Fatal("W stopped when V was deleted")
	}
	if err := c.reg.Register(c.core); err != nil {
		t.Fatal(err)
	}
	c.create("V", "wb", "Cache", "Core")
	c.checkVolume("V re-created on the running shared cache")
	for _, name := range []string{"V", "W"} {
		if err := c.m.Delete(name); err != nil {
			t.Fatal(err)
		}
	}
	if !c.coreHas() {
		t.Fatal("the delete of the re-created V did not write the kept data back")
	}
}

// A different device coming back under the core's name is refused: the
// vbdev fails (ErrCoreMismatch), writing nothing to it, and the cache is
// stopped with the data; the real core coming back retries and starts it.
func TestCoreRemovedWrongDeviceBack(t *testing.T) {
	c := newCoreRemoved(t)
	impostor := c.malloc("Core", 8)
	in, err := c.m.Get("V")
	if err != nil || in.State != vbdev.StateFailed || !errors.Is(in.Err, vbdev.ErrCoreMismatch) {
		t.Fatalf("V after another device came back as its core: %+v, %v; want failed with ErrCoreMismatch", in, err)
	}
	got := make([]byte, len(c.a))
	if err := impostor.ReadAt(got, 0); err != nil || !bytes.Equal(got, make([]byte, len(got))) {
		t.Fatalf("the impostor was written to (err %v)", err)
	}
	if _, err := c.reg.Unregister("Core"); err != nil {
		t.Fatal(err)
	}
	if err := c.reg.Register(c.core); err != nil {
		t.Fatal(err)
	}
	if !c.started("V") {
		in, _ := c.m.Get("V")
		t.Fatalf("V did not start when its real core came back: %+v", in)
	}
	c.checkVolume("V started on its real core")
	if err := c.m.Delete("V"); err != nil {
		t.Fatal(err)
	}
	if !c.coreHas() {
		t.Fatal("the delete did not write the kept data back")
	}
}
