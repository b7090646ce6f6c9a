package vbdev_test

import (
	"bytes"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"blockcache/internal/bdev/errinj"
	"blockcache/internal/bdev/malloc"
	"blockcache/internal/vbdev"
)

// Error chains name each thing once (docs/engine.md, Errors): these pin a
// few whole messages, so that a wrapper repeating what its callee said
// fails here.

// switchable registers a malloc bdev of mib MiB whose IOs of kind fail
// with errinj.ErrInjected while on is set.
func switchable(t *testing.T, e *env, name string, mib int, kind errinj.OpKind, on *atomic.Bool) {
	t.Helper()
	d, err := malloc.New(name, uuid.Nil, 512, uint64(mib)<<20/512)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.reg.Register(errinj.Wrap(d, errinj.InjectorFunc(func(op errinj.Op) error {
		if on.Load() && op.Kind == kind {
			return errinj.ErrInjected
		}
		return nil
	}))); err != nil {
		t.Fatal(err)
	}
}

// wantChain fails unless err is exactly want and wraps errinj.ErrInjected.
func wantChain(t *testing.T, what string, err error, want string) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: no error, want %q", what, want)
	}
	if err.Error() != want {
		t.Errorf("%s:\n got %q\nwant %q", what, err, want)
	}
	if !errors.Is(err, errinj.ErrInjected) {
		t.Errorf("%s: %v does not wrap the injected error", what, err)
	}
}

func TestErrorChainDeleteMetadataWrite(t *testing.T) {
	e := newEnv(t)
	var failing atomic.Bool
	switchable(t, e, "Cache", 8, errinj.OpWrite, &failing)
	e.malloc("Core", 16)
	e.create("Vol", "wt", "Cache", "Core")
	vol, err := e.reg.Lookup("Vol")
	if err != nil {
		t.Fatal(err)
	}
	if err := vol.WriteAt(bytes.Repeat([]byte{1}, 4096), 0, false); err != nil {
		t.Fatal(err)
	}
	failing.Store(true)
	wantChain(t, "delete", e.m.Delete("Vol"),
		`delete OCF vbdev "Vol": remove core "Core": write cache metadata: Cache write at offset 131072 length 512: injected error: input/output error`)
	if !e.started("Vol") {
		t.Error("Vol not started after its delete failed")
	}
	failing.Store(false)
	// The core stays in the cache, serving, so the delete can be retried.
	if err := vol.WriteAt(bytes.Repeat([]byte{2}, 4096), 4096, false); err != nil {
		t.Errorf("write after the failed delete: %v", err)
	}
	if err := e.m.Delete("Vol"); err != nil {
		t.Fatalf("delete once the cache device works: %v", err)
	}
}

func TestErrorChainAddCore(t *testing.T) {
	e := newEnv(t)
	var failing atomic.Bool
	switchable(t, e, "Cache", 8, errinj.OpWrite, &failing)
	e.malloc("Core1", 16)
	e.malloc("Core2", 16)
	failing.Store(true)
	_, err := e.m.Create(vbdev.Params{Name: "V1", Mode: "wt", CacheBdev: "Cache", CoreBdev: "Core1"})
	wantChain(t, "create on a cache device that fails writes", err,
		`create OCF vbdev "V1": initialise cache metadata: Cache write at offset 131072 length 21504: injected error: input/output error`)
	failing.Store(false)
	e.create("V1", "wt", "Cache", "Core1")
	failing.Store(true)
	_, err = e.m.Create(vbdev.Params{Name: "V2", Mode: "wt", CacheBdev: "Cache", CoreBdev: "Core2"})
	wantChain(t, "add a core when the superblock cannot be written", err,
		`create OCF vbdev "V2": add core "Core2": write superblock copy 1: Cache write at offset 65536 length 512: injected error: input/output error`)
	if _, err := e.m.Get("V2"); !errors.Is(err, vbdev.ErrNoSuchVbdev) {
		t.Errorf("V2 after its create failed: %v, want it gone", err)
	}
	failing.Store(false)
	if _, err := e.m.Stats("Gone"); err == nil || err.Error() != `OCF vbdev "Gone": no such OCF vbdev` {
		t.Errorf("stats of a missing vbdev: %v", err)
	}
}

func TestErrorChainFlush(t *testing.T) {
	e := newEnv(t)
	var failWrite, failFlush atomic.Bool
	e.malloc("Cache", 8)
	d, err := malloc.New("Core", uuid.Nil, 512, 16<<20/512)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.reg.Register(errinj.Wrap(d, errinj.InjectorFunc(func(op errinj.Op) error {
		if op.Kind == errinj.OpWrite && failWrite.Load() || op.Kind == errinj.OpFlush && failFlush.Load() {
			return errinj.ErrInjected
		}
		return nil
	}))); err != nil {
		t.Fatal(err)
	}
	e.create("Vol", "wb", "Cache", "Core")
	vol, err := e.reg.Lookup("Vol")
	if err != nil {
		t.Fatal(err)
	}
	if err := vol.WriteAt(bytes.Repeat([]byte{1}, 8192), 0, false); err != nil {
		t.Fatal(err)
	}

	failFlush.Store(true)
	// Both dirty lines fail with the one core flush: said once.
	wantChain(t, "delete with a core that fails flushes", e.m.Delete("Vol"),
		`delete OCF vbdev "Vol": write back dirty data: clean: flush core: Core flush at offset 0 length 0: injected error: input/output error`)
	wantChain(t, "volume flush", vol.Flush(), `Vol flush: core device: Core flush at offset 0 length 0: injected error: input/output error`)
	failFlush.Store(false)

	failWrite.Store(true)
	if err := e.m.FlushStart("Vol", false); err != nil {
		t.Fatal(err)
	}
	st := waitFlushEnd(t, e, "Vol")
	wantChain(t, "background flush with a core that fails writes", st.Err,
		"clean line 0: core device: Core write at offset 0 length 4096: injected error: input/output error\n"+
			"clean line 1: core device: Core write at offset 4096 length 4096: injected error: input/output error")
	failWrite.Store(false)
	if err := e.m.Delete("Vol"); err != nil {
		t.Fatalf("delete once the core works: %v", err)
	}
}

// waitFlushEnd waits up to 10 s for name's background flush to end.
func waitFlushEnd(t *testing.T, e *env, name string) vbdev.FlushStatus {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		st, err := e.m.FlushStatus(name)
		if err != nil {
			t.Fatal(err)
		}
		if !st.InProgress {
			return st
		}
	}
	t.Fatalf("%s: flush still running after 10 s", name)
	return vbdev.FlushStatus{}
}

// TestErrorChainFallbackIOError: a threshold the cache cannot record is an
// IO failure, not an invalid parameter.
func TestErrorChainFallbackIOError(t *testing.T) {
	e := newEnv(t)
	var failing atomic.Bool
	switchable(t, e, "Cache", 8, errinj.OpWrite, &failing)
	e.malloc("Core", 16)
	e.create("Vol", "wt", "Cache", "Core")
	failing.Store(true)
	err := e.m.SetFallbackPT("Vol", 5)
	wantChain(t, "fallback threshold on a failing cache device", err,
		`OCF vbdev "Vol": set fallback pass-through threshold 5: write superblock copy 1: Cache write at offset 65536 length 512: injected error: input/output error`)
	if errors.Is(err, vbdev.ErrInvalidParam) {
		t.Errorf("%v: an IO failure marked as an invalid parameter", err)
	}
	failing.Store(false)
}
