package ocf_test

import (
	"errors"
	"testing"

	"blockcache/internal/bdev"
	"blockcache/internal/bdev/bdevtest"
	"blockcache/internal/ocf"
	"blockcache/internal/ocf/ocftest"
)

// Known engine bugs, each pinned by a test that fails until it is fixed.
// Do not skip them; fix the engine.

// TestBugCoreDeviceConformance runs the bdev.Device conformance suite on a
// cached volume (ocf.Core) in every mode. ocf.Core says it implements
// bdev.Device, whose contract (internal/bdev/device.go) requires every
// method to return an error wrapping bdev.ErrClosed after Close; Core.Close
// (internal/ocf/core.go) is a no-op, so IO keeps working after Close and the
// "Close" subtest fails. Every other subtest passes.
func TestBugCoreDeviceConformance(t *testing.T) {
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

// TestBugCoreReportsDiscardItCannotDo: over a core device that cannot
// discard, ocf.Core still has a Discard method (always returning
// ErrNotSupported) but does not implement bdev.AbilityReporter, so
// bdev.CanDiscard(core) is true: a caller that trusts it (as rpc's
// bdev_get_bdevs and the NBD export do for any bdev.Device) advertises
// unmap and then fails every discard. internal/vbdev works around it with
// its own wrapper; the engine's Core should report SupportsDiscard =
// bdev.CanDiscard(core device) as errinj and delay do.
func TestBugCoreReportsDiscardItCannotDo(t *testing.T) {
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
