package bdevtest

import (
	"errors"
	"syscall"
	"testing"

	"github.com/google/uuid"

	"blockcache/internal/bdev"
	"blockcache/internal/bdev/null"
)

// Wrapper builds the wrapper device under test over inner.
type Wrapper func(t *testing.T, inner bdev.Device) bdev.Device

// RunWrapper checks what a wrapper device (delay, error injection) owes
// the device it wraps, over a RAM device, which has every ability, and a
// null device, which only writes zeroes: it offers exactly the inner
// device's abilities and keeps them honest (CheckAbilities), refuses a
// discard its inner device lacks with ErrNotSupported and EOPNOTSUPP, and
// its Close ends its own IO with ErrClosed and leaves the inner device
// open.
func RunWrapper(t *testing.T, wrap Wrapper) {
	t.Helper()
	t.Run("AbilitiesFollowInner", func(t *testing.T) {
		for _, tc := range []struct {
			name  string
			inner func(*testing.T) bdev.Device
			want  bdev.Abilities
		}{
			{"malloc", func(t *testing.T) bdev.Device { return NewMalloc(t, "Malloc0", 64) }, bdev.Abilities{Discard: true, WriteZeroes: true, ZeroesOnDiscard: true}},
			{"null", newNullInner, bdev.Abilities{WriteZeroes: true}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				inner := tc.inner(t)
				w := wrap(t, inner)
				if a := w.Info().Abilities; a != tc.want || a != inner.Info().Abilities {
					t.Fatalf("abilities %+v, want %+v, the inner device's", a, tc.want)
				}
				CheckAbilities(t, w)
				if tc.want.Discard {
					return
				}
				discard := func(off, n int64) error { return bdev.Discard(w, off, n) }
				if x, ok := w.(bdev.Discarder); ok {
					discard = x.Discard // the wrapper's own method
				}
				err := discard(0, 512)
				if !errors.Is(err, bdev.ErrNotSupported) || bdev.Errno(err) != syscall.EOPNOTSUPP {
					t.Fatalf("Discard over a device without it = %v, want ErrNotSupported (EOPNOTSUPP)", err)
				}
			})
		}
	})
	t.Run("CloseLeavesInnerOpen", func(t *testing.T) {
		inner := NewMalloc(t, "Malloc0", 64)
		w := wrap(t, inner)
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		if err := w.ReadAt(make([]byte, 512), 0); !errors.Is(err, bdev.ErrClosed) {
			t.Fatalf("read after Close = %v, want ErrClosed", err)
		}
		if err := inner.ReadAt(make([]byte, 512), 0); err != nil {
			t.Fatalf("inner device closed with the wrapper: %v", err)
		}
	})
}

func newNullInner(t *testing.T) bdev.Device {
	n, err := null.New("Null0", uuid.Nil, 512, 64)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}
