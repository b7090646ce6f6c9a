package ocf_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"blockcache/internal/bdev"
	"blockcache/internal/bdev/errinj"
	"blockcache/internal/ocf"
	"blockcache/internal/ocf/ocftest"
)

// Device errors (engine.md "Errors"): a failed cache IO is retried against
// the core where the core has the data, dirty data that cannot be read fails
// the request (never stale core data), a failed core IO fails the request,
// and every failure is counted.

// fault is one switchable fault: an op kind on one device, counted.
type fault struct {
	toggle  *errinj.Toggle
	counter *errinj.Counter
}

func newFault(kind errinj.OpKind) fault {
	c := &errinj.Counter{Injector: errinj.ErrInjected.If(errinj.OfKind(kind))}
	return fault{toggle: &errinj.Toggle{Injector: c}, counter: c}
}

func (f fault) on()  { f.toggle.On() }
func (f fault) off() { f.toggle.Off() }

// injected fails the test unless the fault fired at least once.
func (f fault) injected(t *testing.T, what string) {
	t.Helper()
	if f.counter.Load() == 0 {
		t.Fatalf("%s: no fault was injected; the test does not test anything", what)
	}
}

// faultEnv is a one-core cache whose cache and core devices can fail reads,
// writes and flushes on demand. The core starts filled with 'A'.
type faultEnv struct {
	*ocftest.Env
	cacheRd, cacheWr, cacheFlush fault
	coreRd, coreWr, coreFlush    fault
}

func newFaultEnv(t *testing.T, mode ocf.Mode) *faultEnv {
	f := &faultEnv{
		cacheRd: newFault(errinj.OpRead), cacheWr: newFault(errinj.OpWrite), cacheFlush: newFault(errinj.OpFlush),
		coreRd: newFault(errinj.OpRead), coreWr: newFault(errinj.OpWrite), coreFlush: newFault(errinj.OpFlush),
	}
	// No sequential cutoff: a 16-line cache is always "full" for OCF's
	// default, which would send consecutive requests around the cache and
	// away from the faults under test.
	f.Env = ocftest.New(t, ocftest.Options{
		Lines: 16, Mode: mode, SeqCutoff: ocf.CutoffNever{},
		WrapCache: func(d bdev.Device) bdev.Device {
			return errinj.Wrap(d, errinj.Any(f.cacheRd.toggle, f.cacheWr.toggle, f.cacheFlush.toggle))
		},
		WrapCore: func(_ int, d bdev.Device) bdev.Device {
			return errinj.Wrap(d, errinj.Any(f.coreRd.toggle, f.coreWr.toggle, f.coreFlush.toggle))
		},
	})
	fillCore(t, f.Env, 0, 'A')
	return f
}

func (f *faultEnv) co() *ocf.Core { return f.Cores[0] }

func TestErrCacheReadCleanHitFallsBackToCore(t *testing.T) {
	for _, mode := range []ocf.Mode{ocf.ModeWT, ocf.ModeWB, ocf.ModeWA, ocf.ModeWI} {
		t.Run(mode.String(), func(t *testing.T) {
			f := newFaultEnv(t, mode)
			co := f.co()
			volRead(t, co, 0, 2*4096) // inserts lines 0-1 clean
			co.ResetStats()
			f.cacheRd.on()
			// A whole-range hit and a partial hit (half of line 1 is a hit,
			// line 2 a miss), both served from the core.
			expectBytes(t, "hit with failing cache reads", volRead(t, co, 0, 2*4096), tagged('A', 0, 2*4096))
			f.cacheRd.injected(t, "clean hit")
			if e := co.Stats().Errors; e.CacheRd != 1 || e.CacheTotal != 1 || e.Total != 1 || e.CoreTotal != 0 {
				t.Errorf("errors %+v, want one cache_volume_rd", e)
			}
			if b := co.Stats().Blocks; b.CoreRd != 2 {
				t.Errorf("core_volume_rd %d blocks, want 2 (the fallback)", b.CoreRd)
			}
			expectBytes(t, "partial hit", volRead(t, co, 4096+2048, 4096), tagged('A', 4096+2048, 4096))
			f.cacheRd.off()
			expectBytes(t, "after the fault", volRead(t, co, 0, 3*4096), tagged('A', 0, 3*4096))
		})
	}
}

func TestErrCacheReadDirtyFailsRead(t *testing.T) {
	for _, mode := range ocf.Modes() {
		t.Run("read in "+mode.String(), func(t *testing.T) {
			f := newFaultEnv(t, ocf.ModeWB)
			c, co := f.Cache, f.co()
			d := tagged('D', 4096, 4096)
			volWrite(t, co, d, 4096, false) // line 1 dirty
			setMode(t, c, mode, false)
			co.ResetStats()
			f.cacheRd.on()
			for _, r := range []struct {
				what string
				off  int64
				n    int
			}{
				{"dirty line", 4096, 4096},
				{"part of the dirty line", 4096 + 1024, 1024},
				{"dirty line and clean neighbours", 0, 3 * 4096},
			} {
				p := make([]byte, r.n)
				err := co.ReadAt(p, r.off)
				if !errors.Is(err, ocf.ErrDirtyUnreadable) {
					t.Errorf("%s: read returned %v, want an error wrapping ErrDirtyUnreadable", r.what, err)
				}
				if !errors.Is(err, errinj.ErrInjected) {
					t.Errorf("%s: error %v does not wrap the device's error", r.what, err)
				}
			}
			f.cacheRd.injected(t, "dirty read")
			if e := co.Stats().Errors; e.CacheRd < 3 || e.CoreTotal != 0 {
				t.Errorf("errors %+v, want at least 3 cache_volume_rd", e)
			}
			// Cleaning cannot read the dirty data either: it fails and the
			// line stays dirty, the core untouched.
			if err := c.FlushDirty(nil, nil); !errors.Is(err, ocf.ErrDirtyUnreadable) {
				t.Errorf("FlushDirty with unreadable dirty data: %v, want ErrDirtyUnreadable", err)
			}
			if u := c.Stats().Usage; u.Dirty != 1 {
				t.Errorf("dirty %d after failed flush, want 1", u.Dirty)
			}
			expectBytes(t, "core after failed flush", devRead(t, f.CoreDevs[0], 4096, 4096), tagged('A', 4096, 4096))

			f.cacheRd.off()
			expectBytes(t, "dirty data after the fault", volRead(t, co, 4096, 4096), d)
			if err := c.FlushDirty(nil, nil); err != nil {
				t.Fatal(err)
			}
			expectBytes(t, "core after flush", devRead(t, f.CoreDevs[0], 4096, 4096), d)
		})
	}
}

// TestErrCoreWriteFailsWrite: in every mode that writes the core, a core
// write error fails the write, is counted, and leaves no trace of the failed
// data in the cache: reads return what was last acknowledged.
func TestErrCoreWriteFailsWrite(t *testing.T) {
	for _, mode := range []ocf.Mode{ocf.ModeWT, ocf.ModeWA, ocf.ModeWI, ocf.ModePT} {
		for _, cached := range []string{"miss", "clean hit", "dirty hit"} {
			t.Run(fmt.Sprintf("%s/%s", mode, cached), func(t *testing.T) {
				f := newFaultEnv(t, ocf.ModeWT)
				c, co := f.Cache, f.co()
				last := tagged('A', 0, 4096) // the last acknowledged data of line 0
				switch cached {
				case "clean hit":
					volRead(t, co, 0, 4096)
				case "dirty hit":
					setMode(t, c, ocf.ModeWB, false)
					last = tagged('C', 0, 4096)
					volWrite(t, co, last, 0, false)
				}
				setMode(t, c, mode, false)
				occ := c.Stats().Usage.Occupancy
				co.ResetStats()
				f.coreWr.on()
				err := co.WriteAt(tagged('D', 0, 4096), 0, false)
				if !errors.Is(err, errinj.ErrInjected) {
					t.Fatalf("write with failing core: %v, want the injected error", err)
				}
				f.coreWr.injected(t, "core write")
				if e := co.Stats().Errors; e.CoreWr != 1 || e.CoreTotal != 1 || e.Total != 1 {
					t.Errorf("errors %+v, want one core_volume_wr", e)
				}
				f.coreWr.off()
				if u := c.Stats().Usage; u.Occupancy > occ {
					t.Errorf("failed write inserted data: occupancy %d, was %d", u.Occupancy, occ)
				}
				// The injected error stopped the write before the device, so
				// the core holds 'A'; the cache must not hold the failed 'D',
				// and must still hold the dirty 'C'.
				expectBytes(t, "read after failed write", volRead(t, co, 0, 4096), last)
				if cached == "dirty hit" {
					if u := c.Stats().Usage; u.Dirty != 1 {
						t.Errorf("failed write dropped dirty data: usage %+v", u)
					}
				}
			})
		}
	}
}

// TestErrCoreWriteWB: wb and wo do not write the core, so a failing core does
// not fail writes.
func TestErrCoreWriteWB(t *testing.T) {
	for _, mode := range []ocf.Mode{ocf.ModeWB, ocf.ModeWO} {
		t.Run(mode.String(), func(t *testing.T) {
			f := newFaultEnv(t, mode)
			co := f.co()
			f.coreWr.on()
			volWrite(t, co, tagged('D', 0, 4096), 0, true)
			expectBytes(t, "read", volRead(t, co, 0, 4096), tagged('D', 0, 4096))
			if e := co.Stats().Errors; e.Total != 0 {
				t.Errorf("errors %+v, want none", e)
			}
			// Cleaning to the failing core fails; the data stays dirty.
			if err := f.Cache.FlushDirty(nil, nil); !errors.Is(err, errinj.ErrInjected) {
				t.Errorf("FlushDirty to a failing core: %v, want the injected error", err)
			}
			if e := co.Stats().Errors; e.CoreWr != 1 {
				t.Errorf("errors %+v, want one core_volume_wr from cleaning", e)
			}
			if u := f.Cache.Stats().Usage; u.Dirty != 1 {
				t.Errorf("usage %+v after failed cleaning, want the line still dirty", u)
			}
			f.coreWr.off()
			if err := f.Cache.FlushDirty(nil, nil); err != nil {
				t.Fatal(err)
			}
			expectBytes(t, "core after flush", devRead(t, f.CoreDevs[0], 0, 4096), tagged('D', 0, 4096))
		})
	}
}

// TestErrCacheWriteFallsBackToCore: a cache write error in wb/wo sends the
// write to the core (it succeeds); in wt the core already has it. Either way
// the cache must not keep older data for the range: a dirty sector under a
// failed cache write must be dropped, or a later flush would write stale
// data over the new.
func TestErrCacheWriteFallsBackToCore(t *testing.T) {
	for _, mode := range []ocf.Mode{ocf.ModeWB, ocf.ModeWO, ocf.ModeWT} {
		t.Run(mode.String(), func(t *testing.T) {
			f := newFaultEnv(t, ocf.ModeWB)
			c, co := f.Cache, f.co()
			old := tagged('C', 0, 2*4096)
			volWrite(t, co, old, 0, false) // lines 0-1 dirty 'C'
			setMode(t, c, mode, false)
			co.ResetStats()

			f.cacheWr.on()
			// Overwrite the second half of line 0 and a new line 2.
			off, n := int64(2048), 2048
			d := tagged('D', off, n)
			// Its data reaches the core, but the metadata saying the dirty
			// 'C' sectors are gone cannot be written: the write fails, as
			// a FUA write would (else a crash would bring them back over
			// the acknowledged data).
			if err := co.WriteAt(d, off, false); err == nil || !strings.Contains(err.Error(), "dirty state") {
				t.Fatalf("write with the cache device failing: %v, want a dirty state metadata error", err)
			}
			d2 := tagged('E', 2*4096, 4096)
			// A FUA write must also make durable the metadata that says the
			// dirty 'C' sectors are gone (else a crash would bring them
			// back over the acknowledged data); the cache device refuses
			// that write, so the FUA write fails though its data reached
			// the core.
			if err := co.WriteAt(d2, 2*4096, true); err == nil || !strings.Contains(err.Error(), "FUA") {
				t.Fatalf("FUA write with the cache device failing: %v, want a FUA metadata error", err)
			}
			f.cacheWr.injected(t, "cache write")
			f.cacheWr.off()
			if e := co.Stats().Errors; e.CacheWr != 4 || e.CoreTotal != 0 {
				t.Errorf("errors %+v, want four cache_volume_wr (two data writes, two metadata)", e)
			}
			expectBytes(t, "core has the fallen-back write", devRead(t, f.CoreDevs[0], off, n), d)
			expectBytes(t, "core has the fallen-back miss", devRead(t, f.CoreDevs[0], 2*4096, 4096), d2)

			want := append([]byte(nil), old...)
			copy(want[off:], d)
			want = append(want, d2...)
			expectBytes(t, "read after cache write errors", volRead(t, co, 0, 3*4096), want)
			if err := c.FlushDirty(nil, nil); err != nil {
				t.Fatal(err)
			}
			expectBytes(t, "core after flush", devRead(t, f.CoreDevs[0], 0, 3*4096), want)
		})
	}
}

// TestErrCacheWriteOnInsert: a read miss whose insertion fails still returns
// the data; the line is not left valid with garbage.
func TestErrCacheWriteOnInsert(t *testing.T) {
	f := newFaultEnv(t, ocf.ModeWT)
	c, co := f.Cache, f.co()
	f.cacheWr.on()
	expectBytes(t, "read miss with failing insert", volRead(t, co, 0, 2*4096), tagged('A', 0, 2*4096))
	f.cacheWr.injected(t, "insert")
	f.cacheWr.off()
	if e := co.Stats().Errors; e.CacheWr != 1 {
		t.Errorf("errors %+v, want one cache_volume_wr", e)
	}
	if u := c.Stats().Usage; u.Occupancy != 0 {
		t.Errorf("failed insert left occupancy %d", u.Occupancy)
	}
	// The line is not cached: a change behind the cache's back shows.
	devWrite(t, f.CoreDevs[0], tagged('Z', 0, 4096), 0)
	co.ResetStats()
	expectBytes(t, "read after failed insert", volRead(t, co, 0, 4096), tagged('Z', 0, 4096))
	if r := co.Stats().Requests; r != rdFull {
		t.Errorf("read after failed insert counted %+v, want a full miss", r)
	}
}

// TestErrCoreReadFailsMiss: a core read error fails a read miss (pass-through
// included) and inserts nothing.
func TestErrCoreReadFailsMiss(t *testing.T) {
	for _, mode := range ocf.Modes() {
		t.Run(mode.String(), func(t *testing.T) {
			f := newFaultEnv(t, mode)
			c, co := f.Cache, f.co()
			f.coreRd.on()
			if err := co.ReadAt(make([]byte, 4096), 0); !errors.Is(err, errinj.ErrInjected) {
				t.Fatalf("read miss with failing core: %v, want the injected error", err)
			}
			f.coreRd.injected(t, "core read")
			f.coreRd.off()
			if e := co.Stats().Errors; e.CoreRd != 1 || e.Total != 1 {
				t.Errorf("errors %+v, want one core_volume_rd", e)
			}
			if u := c.Stats().Usage; u.Occupancy != 0 {
				t.Errorf("failed read inserted: occupancy %d", u.Occupancy)
			}
			expectBytes(t, "read after the fault", volRead(t, co, 0, 4096), tagged('A', 0, 4096))
		})
	}
}

// TestErrFlush: a volume flush fails when either device's flush fails, and
// the failure is counted against that device.
func TestErrFlush(t *testing.T) {
	f := newFaultEnv(t, ocf.ModeWB)
	co := f.co()
	volWrite(t, co, tagged('D', 0, 4096), 0, false)
	f.cacheFlush.on()
	if err := co.Flush(); !errors.Is(err, errinj.ErrInjected) {
		t.Errorf("flush with failing cache flush: %v", err)
	}
	f.cacheFlush.injected(t, "cache flush")
	f.cacheFlush.off()
	if e := co.Stats().Errors; e.CacheWr != 1 || e.CoreTotal != 0 {
		t.Errorf("errors %+v, want the cache flush failure as cache_volume_wr", e)
	}
	f.coreFlush.on()
	if err := co.Flush(); !errors.Is(err, errinj.ErrInjected) {
		t.Errorf("flush with failing core flush: %v", err)
	}
	f.coreFlush.injected(t, "core flush")
	// Cleaning flushes the core before marking lines clean: it fails too
	// and the line stays dirty.
	if err := f.Cache.FlushDirty(nil, nil); !errors.Is(err, errinj.ErrInjected) {
		t.Errorf("FlushDirty with failing core flush: %v", err)
	}
	f.coreFlush.off()
	if u := f.Cache.Stats().Usage; u.Dirty != 1 {
		t.Errorf("usage %+v: a line whose cleaning was not flushed must stay dirty", u)
	}
	if err := co.Flush(); err != nil {
		t.Errorf("flush after the fault: %v", err)
	}
}

// TestErrCacheFullOfUncleanableLines: when every line is dirty and cleaning
// cannot read them, nothing can be mapped: reads fall back to pass-through
// and writes to write-invalidate (rd_pt / wr_pt), both still correct, and
// the dirty data survives.
func TestErrCacheFullOfUncleanableLines(t *testing.T) {
	for _, mode := range []ocf.Mode{ocf.ModeWB, ocf.ModeWT, ocf.ModeWO} {
		t.Run(mode.String(), func(t *testing.T) {
			f := &faultEnv{
				cacheRd: newFault(errinj.OpRead), cacheWr: newFault(errinj.OpWrite), cacheFlush: newFault(errinj.OpFlush),
				coreRd: newFault(errinj.OpRead), coreWr: newFault(errinj.OpWrite), coreFlush: newFault(errinj.OpFlush),
			}
			f.Env = ocftest.New(t, ocftest.Options{
				Lines: 2, Mode: ocf.ModeWB, SeqCutoff: ocf.CutoffNever{}, // as newFaultEnv
				WrapCache: func(d bdev.Device) bdev.Device {
					return errinj.Wrap(d, errinj.Any(f.cacheRd.toggle, f.cacheWr.toggle, f.cacheFlush.toggle))
				},
			})
			fillCore(t, f.Env, 0, 'A')
			c, co := f.Cache, f.co()
			dirty := tagged('D', 0, 2*4096)
			volWrite(t, co, dirty, 0, false) // both lines dirty
			setMode(t, c, mode, false)
			co.ResetStats()
			f.cacheRd.on()

			e := tagged('E', 2*4096, 4096)
			volWrite(t, co, e, 2*4096, false)
			if r := co.Stats().Requests; r != wrPT {
				t.Errorf("write with no line to map counted %+v, want wr_pt", r)
			}
			expectBytes(t, "core has the write", devRead(t, f.CoreDevs[0], 2*4096, 4096), e)
			co.ResetStats()
			expectBytes(t, "read miss with no line to map", volRead(t, co, 3*4096, 4096), tagged('A', 3*4096, 4096))
			want := rdPT
			if mode == ocf.ModeWO {
				want = rdFull // wo reads never insert, so never lack a line
			}
			if r := co.Stats().Requests; r != want {
				t.Errorf("read with no line to map counted %+v, want %+v", r, want)
			}
			f.cacheRd.injected(t, "cleaning for room")
			f.cacheRd.off()
			if u := c.Stats().Usage; u.Dirty != 2 {
				t.Errorf("usage %+v, want both lines still dirty", u)
			}
			expectBytes(t, "dirty data survives", volRead(t, co, 0, 4*4096), append(append(dirty, e...), tagged('A', 3*4096, 4096)...))
		})
	}
}
