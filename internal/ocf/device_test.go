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

// noDiscard hides the Discard method of the device it wraps.
type noDiscard struct{ d bdev.Device }

func (n noDiscard) Info() bdev.Info                             { return n.d.Info() }
func (n noDiscard) ReadAt(p []byte, off int64) error            { return n.d.ReadAt(p, off) }
func (n noDiscard) WriteAt(p []byte, off int64, fua bool) error { return n.d.WriteAt(p, off, fua) }
func (n noDiscard) Flush() error                                { return n.d.Flush() }
func (n noDiscard) Close() error                                { return n.d.Close() }

// TestCoreReportsDiscardOnlyWhenCoreCan: over a core device that cannot
// discard, the volume's Discard fails with ErrNotSupported and
// bdev.CanDiscard reports false, so callers (bdev_get_bdevs, the NBD export)
// do not advertise unmap.
func TestCoreReportsDiscardOnlyWhenCoreCan(t *testing.T) {
	env := ocftest.New(t, ocftest.Options{Lines: 4, WrapCore: func(_ int, d bdev.Device) bdev.Device { return noDiscard{d} }})
	co := env.Cores[0]
	err := co.Discard(0, 4096)
	if !errors.Is(err, bdev.ErrNotSupported) {
		t.Fatalf("Discard over a core that cannot discard: %v, want ErrNotSupported", err)
	}
	if bdev.CanDiscard(co) {
		t.Errorf("bdev.CanDiscard(core) = true, but its Discard returns %v", err)
	}
}
