package bdevtest

import (
	"bytes"
	"errors"
	"testing"

	"blockcache/internal/bdev"
)

// CheckAbilities fails the test if d's Info lies about its abilities: a
// discard and a write-zeroes of one block, called on the device's own
// methods where it has them, must succeed exactly when Info's Abilities
// offer them; an operation not offered must change nothing, and
// bdev.Discard and bdev.WriteZeroes must refuse it with
// bdev.ErrNotSupported; ZeroesOnDiscard must come with Discard and hold;
// a ReadOnly device must offer nothing and refuse a write; and Info must
// not allocate. It writes the first block of d.
func CheckAbilities(t *testing.T, d bdev.Device) {
	t.Helper()
	info := d.Info()
	a := info.Abilities
	if a.ZeroesOnDiscard && !a.Discard {
		t.Errorf("%s: ZeroesOnDiscard without Discard", info.Name)
	}
	if info.ReadOnly {
		if a != (bdev.Abilities{}) {
			t.Errorf("%s: read-only but offers %+v", info.Name, a)
		}
		if err := d.WriteAt(make([]byte, info.BlockSize), 0, false); err == nil {
			t.Errorf("%s: read-only but a write succeeded", info.Name)
		}
	}
	if n := testing.AllocsPerRun(10, func() { _ = d.Info() }); n != 0 {
		t.Errorf("%s: Info allocates %v times", d.Info().Name, n)
	}
	var discard, zeroes func(off, n int64) error
	if x, ok := d.(bdev.Discarder); ok {
		discard = x.Discard
	}
	if x, ok := d.(bdev.WriteZeroer); ok {
		zeroes = x.WriteZeroes
	}
	checkAbility(t, d, "Discard", a.Discard, a.ZeroesOnDiscard, discard, bdev.Discard)
	checkAbility(t, d, "WriteZeroes", a.WriteZeroes, true, zeroes, bdev.WriteZeroes)
}

// checkAbility checks one ability of d: method is the device's own (nil when
// it has none) and helper the bdev package's function for it; zeroes says
// whether the range must read back as zeroes afterwards.
func checkAbility(t *testing.T, d bdev.Device, name string, offered, zeroes bool, method func(off, n int64) error, helper func(bdev.Device, int64, int64) error) {
	t.Helper()
	dev := d.Info().Name
	bs := int64(d.Info().BlockSize)
	if err := d.WriteAt(Pattern(7, int(bs)), 0, false); err != nil && offered {
		// A read-only device offers neither ability.
		t.Errorf("%s: offers %s but cannot write: %v", dev, name, err)
	}
	orig := MustRead(t, d, 0, int(bs)) // the pattern, unless d drops writes
	if !offered {
		if err := helper(d, 0, bs); !errors.Is(err, bdev.ErrNotSupported) {
			t.Errorf("%s: bdev.%s on a device that does not offer it = %v, want ErrNotSupported", dev, name, err)
		}
		if method != nil {
			if err := method(0, bs); err == nil {
				t.Errorf("%s: %s succeeds, but Info does not offer it", dev, name)
			}
		}
		if got := MustRead(t, d, 0, int(bs)); !bytes.Equal(got, orig) {
			t.Errorf("%s: a %s the device does not offer changed its data", dev, name)
		}
		return
	}
	if method == nil {
		t.Errorf("%s: Info offers %s, but the device has no %s method", dev, name, name)
		return
	}
	if err := method(0, bs); err != nil {
		t.Errorf("%s: Info offers %s, but it fails: %v", dev, name, err)
		return
	}
	if got := MustRead(t, d, 0, int(bs)); zeroes && !bytes.Equal(got, make([]byte, bs)) {
		t.Errorf("%s: the block does not read back as zeroes after %s", dev, name)
	}
}

// Restrict returns d offering only the abilities in a that d offers: its
// Info's Abilities are the intersection, and its Discard and WriteZeroes
// forward to d's. It stands for a device that lacks some ability, as a
// plain wrapper embedding bdev.Device cannot: that one would forward Info
// and claim abilities whose methods it hides.
func Restrict(d bdev.Device, a bdev.Abilities) bdev.Device {
	info := d.Info()
	in := info.Abilities
	info.Abilities = bdev.Abilities{
		Discard:         a.Discard && in.Discard,
		WriteZeroes:     a.WriteZeroes && in.WriteZeroes,
		ZeroesOnDiscard: a.Discard && a.ZeroesOnDiscard && in.ZeroesOnDiscard,
	}
	return &restricted{Device: d, info: info}
}

type restricted struct {
	bdev.Device
	info bdev.Info
}

func (r *restricted) Info() bdev.Info { return r.info }

func (r *restricted) Discard(off, n int64) error {
	if !r.info.Abilities.Discard {
		return &bdev.IOError{Op: "discard", Dev: r.info.Name, Offset: off, Len: n, Err: bdev.ErrNotSupported}
	}
	return bdev.Discard(r.Device, off, n)
}

func (r *restricted) WriteZeroes(off, n int64) error {
	if !r.info.Abilities.WriteZeroes {
		return &bdev.IOError{Op: "write-zeroes", Dev: r.info.Name, Offset: off, Len: n, Err: bdev.ErrNotSupported}
	}
	return bdev.WriteZeroes(r.Device, off, n)
}
