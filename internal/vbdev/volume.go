package vbdev

import (
	"blockcache/internal/bdev"
	"blockcache/internal/ocf"
)

// ProductName is what bdev_get_bdevs shows for a cached volume. It is SPDK's
// string, so scripts that select OCF vbdevs by product name keep working.
const ProductName = "SPDK OCF"

// volume is the registered device of a started vbdev: it forwards the
// bdev.Device methods to the engine's core and nothing else, so the volume
// has a Discard method (discardVolume) only when the core device can
// discard, and bdev.CanDiscard and the NBD export's flags tell the truth.
type volume struct{ core *ocf.Core }

func (v volume) Info() bdev.Info                             { return v.core.Info() }
func (v volume) ReadAt(p []byte, off int64) error            { return v.core.ReadAt(p, off) }
func (v volume) WriteAt(p []byte, off int64, fua bool) error { return v.core.WriteAt(p, off, fua) }
func (v volume) Flush() error                                { return v.core.Flush() }
func (v volume) Close() error                                { return v.core.Close() }

// discardVolume is a volume whose core device can discard.
type discardVolume struct{ volume }

// Discard implements bdev.Discarder.
func (v discardVolume) Discard(off, length int64) error { return v.core.Discard(off, length) }

// newVolume wraps co as the device to register.
func newVolume(co *ocf.Core) bdev.Device {
	if bdev.CanDiscard(co.CoreDevice()) {
		return discardVolume{volume{co}}
	}
	return volume{co}
}
