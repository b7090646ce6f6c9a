package bdev_test

import (
	"errors"
	"fmt"
	"syscall"
	"testing"

	"blockcache/internal/bdev"
	"blockcache/internal/bdev/malloc"
)

// methodless forwards Info, abilities included, but hides the methods
// behind them: a device that claims abilities it cannot perform.
type methodless struct{ bdev.Device }

// silent has Discard and WriteZeroes, which count their calls, but an Info
// that offers neither.
type silent struct {
	bdev.Device
	calls *int
}

func (s silent) Info() bdev.Info {
	in := s.Device.Info()
	in.Abilities = bdev.Abilities{}
	return in
}
func (s silent) Discard(off, n int64) error     { *s.calls++; return nil }
func (s silent) WriteZeroes(off, n int64) error { *s.calls++; return nil }

// TestAbilityHelpers: bdev.Discard and bdev.WriteZeroes perform an
// operation only when both Info offers it and the device has the method;
// otherwise they return ErrNotSupported without calling anything.
func TestAbilityHelpers(t *testing.T) {
	m, err := malloc.New("m", [16]byte{}, 512, 8)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if a := m.Info().Abilities; a != (bdev.Abilities{Discard: true, WriteZeroes: true, ZeroesOnDiscard: true}) {
		t.Fatalf("malloc abilities %+v, want all", a)
	}
	var calls int
	tests := []struct {
		name string
		dev  bdev.Device
		ok   bool
	}{
		{"offered", m, true},
		{"offered without methods", methodless{m}, false},
		{"methods not offered", silent{m, &calls}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for op, err := range map[string]error{
				"Discard":     bdev.Discard(tc.dev, 0, 512),
				"WriteZeroes": bdev.WriteZeroes(tc.dev, 0, 512),
			} {
				if tc.ok != (err == nil) || (err != nil && !errors.Is(err, bdev.ErrNotSupported)) {
					t.Errorf("%s = %v, want success %v or ErrNotSupported", op, err, tc.ok)
				}
			}
		})
	}
	if calls != 0 {
		t.Errorf("the helpers called %d methods that Info does not offer", calls)
	}
}

func TestErrno(t *testing.T) {
	ioErr := &bdev.IOError{Op: "read", Dev: "d", Offset: 4096, Len: 512, Err: syscall.EROFS}
	tests := []struct {
		err  error
		want syscall.Errno
	}{
		{nil, 0},
		{fmt.Errorf("x: %w", bdev.ErrInvalidIO), syscall.EINVAL},
		{fmt.Errorf("x: %w", bdev.ErrInvalidName), syscall.EINVAL},
		{bdev.ErrNotSupported, syscall.EOPNOTSUPP},
		{bdev.ErrClosed, syscall.ENODEV},
		{bdev.ErrNoSuchDevice, syscall.ENODEV},
		{bdev.ErrExists, syscall.EEXIST},
		{bdev.ErrDeviceClaimed, syscall.EBUSY},
		{ioErr, syscall.EROFS},
		{errors.New("anything else"), syscall.EIO},
	}
	for _, tc := range tests {
		if got := bdev.Errno(tc.err); got != tc.want {
			t.Errorf("Errno(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
	if want := "d read at offset 4096 length 512: read-only file system"; ioErr.Error() != want {
		t.Errorf("IOError = %q, want %q", ioErr.Error(), want)
	}
}

func TestCheckIO(t *testing.T) {
	info := bdev.Info{Name: "d", BlockSize: 512, NumBlocks: 8}
	tests := []struct {
		off, n int64
		ok     bool
	}{
		{0, 0, true}, {0, 4096, true}, {3584, 512, true},
		{-512, 512, false}, {0, -512, false}, {1, 512, false}, {0, 511, false},
		{3584, 1024, false}, {4096, 512, false}, {512, 1<<63 - 512, false},
	}
	for _, tc := range tests {
		err := bdev.CheckIO(&info, "read", tc.off, tc.n)
		if (err == nil) != tc.ok || (err != nil && !errors.Is(err, bdev.ErrInvalidIO)) {
			t.Errorf("CheckIO(%d, %d) = %v, want ok=%v", tc.off, tc.n, err, tc.ok)
		}
	}
}
