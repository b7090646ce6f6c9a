package bdev_test

import (
	"errors"
	"fmt"
	"syscall"
	"testing"

	"blockcache/internal/bdev"
	"blockcache/internal/bdev/malloc"
)

// plain is a Device with no optional abilities.
type plain struct{ bdev.Device }

// reporting wraps a device, always has Discard and WriteZeroes, and reports
// the abilities it was built with, as the delay and errinj wrappers do.
type reporting struct {
	bdev.Device
	discard, zeroes, zeroesOnDiscard bool
}

func (r reporting) Discard(off, n int64) error {
	if !r.discard {
		return bdev.ErrNotSupported
	}
	return nil
}
func (r reporting) WriteZeroes(off, n int64) error { return nil }
func (r reporting) SupportsDiscard() bool          { return r.discard }
func (r reporting) SupportsWriteZeroes() bool      { return r.zeroes }
func (r reporting) ZeroesOnDiscard() bool          { return r.zeroesOnDiscard }

func TestAbilities(t *testing.T) {
	m, err := malloc.New("m", [16]byte{}, 512, 8)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	tests := []struct {
		dev                         bdev.Device
		discard, zeroes, zeroOnTrim bool
	}{
		{m, true, true, true},
		{plain{m}, false, false, false},
		{reporting{Device: m}, false, false, false},
		{reporting{Device: m, discard: true}, true, false, false},
		{reporting{Device: m, zeroes: true}, false, true, false},
		// ZeroesOnDiscard is false when the device cannot discard at all.
		{reporting{Device: m, zeroesOnDiscard: true}, false, false, false},
		{reporting{Device: m, discard: true, zeroesOnDiscard: true}, true, false, true},
	}
	for i, tc := range tests {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			if got := bdev.CanDiscard(tc.dev); got != tc.discard {
				t.Errorf("CanDiscard = %v, want %v", got, tc.discard)
			}
			if got := bdev.CanWriteZeroes(tc.dev); got != tc.zeroes {
				t.Errorf("CanWriteZeroes = %v, want %v", got, tc.zeroes)
			}
			if got := bdev.ZeroesOnDiscard(tc.dev); got != tc.zeroOnTrim {
				t.Errorf("ZeroesOnDiscard = %v, want %v", got, tc.zeroOnTrim)
			}
			err := bdev.Discard(tc.dev, 0, 512)
			if tc.discard != (err == nil) || (err != nil && !errors.Is(err, bdev.ErrNotSupported)) {
				t.Errorf("Discard = %v, want support %v", err, tc.discard)
			}
		})
	}
	if err := bdev.WriteZeroes(plain{m}, 0, 512); !errors.Is(err, bdev.ErrNotSupported) {
		t.Errorf("WriteZeroes on plain device = %v, want ErrNotSupported", err)
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
