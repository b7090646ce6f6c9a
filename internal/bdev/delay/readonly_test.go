package delay_test

import (
	"testing"

	"blockcache/internal/bdev"
	"blockcache/internal/bdev/bdevtest"
	"blockcache/internal/bdev/delay"
)

// TestReadOnlyFollowsInner: a delay device over a file opened read-only
// says ReadOnly in its Info, with no abilities, and its writes fail as the
// file's do; over a writable device it is not read-only.
func TestReadOnlyFollowsInner(t *testing.T) {
	ro := bdevtest.NewReadOnlyFile(t, "golden", 1<<20)
	d, err := delay.New(ro, delay.Config{Name: "Delay0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	if info := d.Info(); !info.ReadOnly || info.Abilities != (bdev.Abilities{}) {
		t.Fatalf("delay over a read-only file: ReadOnly=%v Abilities=%+v, want true and none", info.ReadOnly, info.Abilities)
	}
	if err := d.WriteAt(make([]byte, 512), 0, false); err == nil {
		t.Fatal("write through a read-only delay device succeeded")
	}

	w, err := delay.New(bdevtest.NewMalloc(t, "Malloc0", 128), delay.Config{Name: "Delay1"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	if w.Info().ReadOnly {
		t.Fatal("delay over a malloc device says ReadOnly")
	}
	if err := w.WriteAt(make([]byte, 512), 0, false); err != nil {
		t.Fatalf("write through a writable delay device: %v", err)
	}
}
