package errinj_test

import (
	"testing"

	"github.com/google/uuid"

	"blockcache/internal/bdev"
	"blockcache/internal/bdev/bdevtest"
	"blockcache/internal/bdev/errinj"
	"blockcache/internal/bdev/null"
)

// TestReadOnlyFollowsInner: both the plain wrapper and SPDK's error bdev
// over a file opened read-only say ReadOnly in their Info, with no
// abilities; over a writable device neither does.
func TestReadOnlyFollowsInner(t *testing.T) {
	ro := bdevtest.NewReadOnlyFile(t, "golden", 1<<20)
	rw, err := null.New("Null0", uuid.Nil, 512, 128)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rw.Close() })

	for _, tc := range []struct {
		name string
		wrap func(bdev.Device) bdev.Device
	}{
		{"Wrap", func(d bdev.Device) bdev.Device { return errinj.Wrap(d, errinj.Any()) }},
		{"NewErrorBdev", func(d bdev.Device) bdev.Device { e, _ := errinj.NewErrorBdev(d, uuid.Nil); return e }},
	} {
		if info := tc.wrap(ro).Info(); !info.ReadOnly || info.Abilities != (bdev.Abilities{}) {
			t.Errorf("%s over a read-only file: ReadOnly=%v Abilities=%+v, want true and none", tc.name, info.ReadOnly, info.Abilities)
		}
		if tc.wrap(rw).Info().ReadOnly {
			t.Errorf("%s over a null device says ReadOnly", tc.name)
		}
	}
}
