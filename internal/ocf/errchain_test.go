package ocf_test

import (
	"errors"
	"sync/atomic"
	"testing"

	"github.com/google/uuid"

	"blockcache/internal/bdev"
	"blockcache/internal/bdev/errinj"
	"blockcache/internal/bdev/malloc"
	"blockcache/internal/ocf"
)

// Error chains name each thing once (errors.go): these pin whole messages
// of the management operations, with the sentinel each must wrap.

// chainDevice is a malloc device of mib MiB whose IOs of kind fail while
// on is set.
func chainDevice(t *testing.T, name string, mib int, kind errinj.OpKind, on *atomic.Bool) bdev.Device {
	t.Helper()
	d, err := malloc.New(name, uuid.Nil, 512, uint64(mib)<<20/512)
	if err != nil {
		t.Fatal(err)
	}
	return errinj.Wrap(d, errinj.InjectorFunc(func(op errinj.Op) error {
		if on.Load() && op.Kind == kind {
			return errinj.ErrInjected
		}
		return nil
	}))
}

func wantChain(t *testing.T, what string, err, sentinel error, want string) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: no error, want %q", what, want)
	}
	if err.Error() != want {
		t.Errorf("%s:\n got %q\nwant %q", what, err, want)
	}
	if !errors.Is(err, sentinel) {
		t.Errorf("%s: %v does not wrap %v", what, err, sentinel)
	}
}

func TestErrorChainsManagement(t *testing.T) {
	var cacheFails, readFails atomic.Bool
	cacheDev := chainDevice(t, "Cache", 8, errinj.OpWrite, &cacheFails)
	var never atomic.Bool
	coreDev := chainDevice(t, "Core", 16, errinj.OpWrite, &never)
	c, err := ocf.New(cacheDev, ocf.Config{Mode: ocf.ModeWT})
	if err != nil {
		t.Fatal(err)
	}
	add := func() (*ocf.Core, error) {
		return c.AddCore(ocf.CoreConfig{ID: 0, Device: coreDev, Volume: bdev.Info{Name: "Vol"}})
	}
	co, err := add()
	if err != nil {
		t.Fatal(err)
	}
	_, err = add()
	wantChain(t, "add a core twice", err, ocf.ErrCoreExists, `add core "Core": device already a core of this cache: core already exists`)
	wantChain(t, "stop with a core attached", c.Stop(), ocf.ErrCoreExists, `stop cache "Cache": 1 cores still attached: core already exists`)

	// Clean lines: the removal fails after it unmapped them, writing the
	// entries that say so.
	if err := co.WriteAt(make([]byte, 4096), 0, false); err != nil {
		t.Fatal(err)
	}
	cacheFails.Store(true)
	wantChain(t, "remove a core when the metadata cannot be written", c.RemoveCore(co, true), errinj.ErrInjected,
		`remove core "Core": write cache metadata: Cache write at offset 131072 length 512: injected error: input/output error`)
	cacheFails.Store(false)
	if err := co.WriteAt(make([]byte, 4096), 4096, false); err != nil {
		t.Fatalf("the core after its removal failed: %v, want it serving", err)
	}
	if err := c.RemoveCore(co, true); err != nil {
		t.Fatalf("removal retried: %v", err)
	}
	wantChain(t, "remove a missing core", c.RemoveCore(co, true), ocf.ErrNoSuchCore, `remove core "Core": no such core`)
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	_, err = add()
	wantChain(t, "add a core to a stopped cache", err, ocf.ErrStopped, `add core "Core": cache stopped`)

	reader := chainDevice(t, "Cache", 8, errinj.OpRead, &readFails)
	readFails.Store(true)
	_, _, err = ocf.Load(reader, ocf.Config{})
	wantChain(t, "load when the superblocks cannot be read", err, errinj.ErrInjected,
		`load cache: read superblocks: Cache read at offset 0 length 131072: injected error: input/output error`)
}
