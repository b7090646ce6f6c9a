package ocf_test

import (
	"errors"
	"testing"

	"blockcache/internal/bdev"
	"blockcache/internal/bdev/bdevtest"
	"blockcache/internal/ocf"
	"blockcache/internal/ocf/ocftest"
)

// TestCoreDeviceConformance runs the bdev.Device conformance suite on a
// cached volume (ocf.Core) in every mode, Close included: after Close every
// method fails with bdev.ErrClosed.
func TestCoreDeviceConformance(t *testing.T) {
	for _, mode := range ocf.Modes() {
		t.Run(mode.String(), func(t *testing.T) {
			bdevtest.Run(t, func(t *testing.T) bdev.Device {
				env := ocftest.New(t, ocftest.Options{Lines: 4, Mode: mode, CoreBytes: 64 << 10})
				return env.Cores[0]
			})
		})
	}
}

// TestCoreAbilitiesFollowCore: a volume's Info offers discard exactly when
// its core device does, zeroes on discard when the core does, and never
// write-zeroes, whatever the mode; and the volume does what its Info says,
// so callers (bdev_get_bdevs, the NBD export) advertise only what works.
func TestCoreAbilitiesFollowCore(t *testing.T) {
	for _, tc := range []struct {
		name string
		core bdev.Abilities // what the core device is restricted to
		want bdev.Abilities
	}{
		{"malloc", bdev.Abilities{Discard: true, WriteZeroes: true, ZeroesOnDiscard: true}, bdev.Abilities{Discard: true, ZeroesOnDiscard: true}},
		{"no zeroes on discard", bdev.Abilities{Discard: true, WriteZeroes: true}, bdev.Abilities{Discard: true}},
		{"no discard", bdev.Abilities{WriteZeroes: true}, bdev.Abilities{}},
	} {
		for _, mode := range ocf.Modes() {
			t.Run(tc.name+"/"+mode.String(), func(t *testing.T) {
				wrap := func(_ int, d bdev.Device) bdev.Device { return bdevtest.Restrict(d, tc.core) }
				env := ocftest.New(t, ocftest.Options{Lines: 4, Mode: mode, WrapCore: wrap})
				co := env.Cores[0]
				if got := co.Info().Abilities; got != tc.want {
					t.Fatalf("abilities %+v over a core with %+v, want %+v", got, tc.core, tc.want)
				}
				bdevtest.CheckAbilities(t, co)
				if !tc.want.Discard {
					if err := co.Discard(0, 4096); !errors.Is(err, bdev.ErrNotSupported) {
						t.Errorf("Discard over a core that cannot discard: %v, want ErrNotSupported", err)
					}
				}
			})
		}
	}
}
