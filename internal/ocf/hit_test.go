package ocf_test

import (
	"sync/atomic"
	"testing"
	"time"

	"blockcache/internal/bdev"
	"blockcache/internal/ocf"
	"blockcache/internal/ocf/ocftest"
)

// Tests of the hit path's lock-free attempt (hit.go): a read hit that races
// with a writer must not return what the writer replaced once the write has
// returned, nor be counted twice.

// hookDev runs hook, once, after the first read of the cache device that
// follows arming, with the data already copied: the moment a lock-free hit
// has read stale data and not yet validated it.
type hookDev struct {
	bdev.Device
	armed atomic.Bool
	hook  func()
}

func (d *hookDev) ReadAt(p []byte, off int64) error {
	err := d.Device.ReadAt(p, off)
	if d.armed.CompareAndSwap(true, false) {
		d.hook()
	}
	return err
}

func TestReadHitRacingWriteReturnsNewData(t *testing.T) {
	for _, mode := range []ocf.Mode{ocf.ModeWT, ocf.ModeWB, ocf.ModeWA} {
		t.Run(mode.String(), func(t *testing.T) {
			var dev *hookDev
			env := ocftest.New(t, ocftest.Options{Lines: 16, Mode: mode, WrapCache: func(d bdev.Device) bdev.Device {
				dev = &hookDev{Device: d}
				return dev
			}})
			co := env.Cores[0]
			const off = 3 * 4096
			old, newer := tagged('O', off, 4096), tagged('N', off, 4096)
			volWrite(t, co, old, off, false)
			expectBytes(t, "warm-up read", volRead(t, co, off, 4096), old) // now a hit in every mode
			co.ResetStats()

			// The writer overwrites the line after the hit copied it. It
			// must be able to: the lock-free attempt holds no stripe.
			wrote := make(chan error, 1)
			dev.hook = func() {
				go func() { wrote <- co.WriteAt(newer, off, false) }()
				select {
				case err := <-wrote:
					if err != nil {
						t.Errorf("racing write: %v", err)
					}
				case <-time.After(5 * time.Second):
					t.Fatal("a write could not get in while a read hit was reading the cache device: the hit holds its stripe")
				}
			}
			dev.armed.Store(true)
			// The write returned before the read did, so the read must see it.
			expectBytes(t, "read hit raced by a write", volRead(t, co, off, 4096), newer)
			if dev.armed.Load() {
				t.Fatal("the hook never ran: the read did not read the cache device")
			}
			s := co.Stats().Requests
			if s.RdTotal != 1 || s.RdHits != 1 {
				t.Errorf("read requests %+v, want one read, counted once, as a hit", s)
			}
		})
	}
}

func TestReadHitCacheErrorCountedOnce(t *testing.T) {
	f := newFaultEnv(t, ocf.ModeWT)
	co := f.co()
	volRead(t, co, 4096, 4096) // inserts line 1 clean
	co.ResetStats()
	f.cacheRd.on()
	expectBytes(t, "hit with failing cache reads", volRead(t, co, 4096+512, 1024), tagged('A', 4096+512, 1024))
	f.cacheRd.off()
	if e := co.Stats().Errors; e.CacheRd != 1 || e.Total != 1 {
		t.Errorf("errors %+v, want one cache_volume_rd", e)
	}
	if r := co.Stats().Requests; r.RdTotal != 1 {
		t.Errorf("requests %+v, want one read", r)
	}
}
