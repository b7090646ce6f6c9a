package vbdev_test

import (
	"bytes"
	"errors"
	"sync/atomic"
	"testing"

	"blockcache/internal/bdev"
	"blockcache/internal/bdev/errinj"
	"blockcache/internal/vbdev"
)

// TestCreateAfterFailedAddCore: a vbdev whose core the shared cache cannot
// record (the superblock write fails) is not left half-created: bdev_ocf_create
// fails, the vbdev is gone, its core bdev unclaimed and unregistered as a
// volume, the cache's other vbdev serves on, and the same create succeeds
// once the cache device works. A restored vbdev failing the same way is
// kept failed, holding nothing, and a create retries it.
func TestCreateAfterFailedAddCore(t *testing.T) {
	for _, restore := range []bool{false, true} {
		name := "create"
		if restore {
			name = "restore"
		}
		t.Run(name, func(t *testing.T) {
			e := newEnv(t)
			var failing atomic.Bool
			switchable(t, e, "Cache", 8, errinj.OpWrite, &failing)
			e.malloc("Core1", 4)
			e.malloc("Core2", 4)
			e.create("V1", "wt", "Cache", "Core1")
			v1, err := e.reg.Lookup("V1")
			if err != nil {
				t.Fatal(err)
			}

			p := vbdev.Params{Name: "V2", Mode: "wt", CacheBdev: "Cache", CoreBdev: "Core2"}
			failing.Store(true)
			if restore {
				_, err = e.m.Restore(p)
			} else {
				_, err = e.m.Create(p)
			}
			failing.Store(false)
			if !errors.Is(err, errinj.ErrInjected) {
				t.Fatalf("%s V2 with the superblock write failing: %v, want the injected error", name, err)
			}
			in, gerr := e.m.Get("V2")
			switch {
			case !restore && !errors.Is(gerr, vbdev.ErrNoSuchVbdev):
				t.Fatalf("V2 after its create failed: %v, want it gone", gerr)
			case restore && (gerr != nil || in.State != vbdev.StateFailed):
				t.Fatalf("V2 after its restore failed: %+v, %v; want it kept, failed", in, gerr)
			}
			if _, err := e.reg.Lookup("V2"); !errors.Is(err, bdev.ErrNoSuchDevice) {
				t.Fatalf("volume V2 after the failed add: %v, want no such device", err)
			}
			if owner, claimed := e.reg.ClaimOwner("Core2"); claimed {
				t.Fatalf("Core2 still claimed by %q after the failed add", owner)
			}
			if err := v1.WriteAt(bytes.Repeat([]byte{1}, 4096), 0, false); err != nil {
				t.Fatalf("V1 write after V2's failed add: %v", err)
			}

			e.create("V2", "wt", "Cache", "Core2")
			if !e.started("V2") {
				t.Fatal("V2 not started once the cache device works")
			}
			v2, err := e.reg.Lookup("V2")
			if err != nil {
				t.Fatal(err)
			}
			want := bytes.Repeat([]byte{2}, 4096)
			if err := v2.WriteAt(want, 8192, false); err != nil {
				t.Fatal(err)
			}
			got := make([]byte, 4096)
			if err := v2.ReadAt(got, 8192); err != nil || !bytes.Equal(got, want) {
				t.Fatalf("V2 read back: %v, equal %v", err, bytes.Equal(got, want))
			}
			for _, name := range []string{"V2", "V1"} {
				if err := e.m.Delete(name); err != nil {
					t.Fatalf("delete %s: %v", name, err)
				}
			}
		})
	}
}
