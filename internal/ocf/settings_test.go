package ocf_test

import (
	"bytes"
	"errors"
	"strings"
	"sync"
	"syscall"
	"testing"

	"blockcache/internal/bdev"
	"blockcache/internal/bdev/errinj"
	"blockcache/internal/ocf"
	"blockcache/internal/ocf/metadata"
	"blockcache/internal/ocf/ocftest"
)

// reloaded loads a copy of env's cache device as it is now: what a restart
// would find.
func reloaded(t *testing.T, env *ocftest.Env) *ocf.Cache {
	t.Helper()
	c, _, err := ocf.Load(imageDevice(t, devRead(t, env.CacheDev, 0, int(env.CacheDev.Info().SizeBytes()))), ocf.Config{})
	if err != nil {
		t.Fatalf("load a copy of the cache device: %v", err)
	}
	return c
}

// expectEIO fails the test unless err is the injected device error, as EIO.
func expectEIO(t *testing.T, what string, err error) {
	t.Helper()
	if !errors.Is(err, errinj.ErrInjected) || bdev.Errno(err) != syscall.EIO || errors.Is(err, ocf.ErrInvalidConfig) {
		t.Fatalf("%s with the superblock write failing: %v, want the injected EIO", what, err)
	}
}

// expectWriteIn writes tag at off through co and checks it behaves as mode
// m: write-through (wt) reaches the core and leaves nothing dirty,
// write-back (wb) leaves the core as it was and the line dirty.
func expectWriteIn(t *testing.T, env *ocftest.Env, m ocf.Mode, tag byte, off int64) {
	t.Helper()
	co := env.Cores[0]
	coreBefore := devRead(t, env.CoreDevs[0], off, 4096)
	dirtyBefore := env.Cache.Stats().Usage.Dirty
	volWrite(t, co, tagged(tag, off, 4096), off, false)
	expectBytes(t, "read back", volRead(t, co, off, 4096), tagged(tag, off, 4096))
	dirty := env.Cache.Stats().Usage.Dirty
	switch m {
	case ocf.ModeWT:
		expectBytes(t, "wt write on the core", devRead(t, env.CoreDevs[0], off, 4096), tagged(tag, off, 4096))
		if dirty != dirtyBefore {
			t.Fatalf("wt write: dirty %d -> %d 4 KiB blocks, want unchanged", dirtyBefore, dirty)
		}
	case ocf.ModeWB:
		expectBytes(t, "core under a wb write", devRead(t, env.CoreDevs[0], off, 4096), coreBefore)
		if dirty != dirtyBefore+1 {
			t.Fatalf("wb write: dirty %d -> %d 4 KiB blocks, want one more", dirtyBefore, dirty)
		}
	default:
		t.Fatalf("expectWriteIn: mode %s not handled", m)
	}
}

// TestSetModeMetadataWriteFails: when the superblock cannot be written,
// SetMode returns the device's error (EIO), the old mode stays in force,
// in memory and on the device, and writes keep behaving as in the old
// mode; once the device works again, the change goes through.
func TestSetModeMetadataWriteFails(t *testing.T) {
	for _, tc := range []struct{ from, to ocf.Mode }{{ocf.ModeWT, ocf.ModeWB}, {ocf.ModeWB, ocf.ModeWT}} {
		t.Run(tc.from.String()+"-"+tc.to.String(), func(t *testing.T) {
			fail := &errinj.Toggle{Injector: errinj.ErrInjected.If(errinj.Writes())}
			env := ocftest.New(t, ocftest.Options{Lines: 16, Mode: tc.from, SeqCutoff: ocf.CutoffNever{},
				WrapCache: func(d bdev.Device) bdev.Device { return errinj.Wrap(d, fail) }})
			c := env.Cache
			fail.On()
			expectEIO(t, "set mode "+tc.to.String(), c.SetMode(tc.to, false))
			fail.Off()
			if got := c.Mode(); got != tc.from {
				t.Fatalf("set mode %s failed, but the mode in force is %s", tc.to, got)
			}
			if got := reloaded(t, env).Mode(); got != tc.from {
				t.Fatalf("set mode %s failed, but the device records %s", tc.to, got)
			}
			expectWriteIn(t, env, tc.from, 'O', 0)
			setMode(t, c, tc.to, false)
			expectWriteIn(t, env, tc.to, 'N', 4*4096)
			if got := reloaded(t, env).Mode(); got != tc.to {
				t.Fatalf("set mode %s succeeded, but the device records %s", tc.to, got)
			}
		})
	}
}

// TestSetModeSecondSuperblockCopyFails: when the first superblock copy is
// written and the second fails, the device's newest copy holds the new
// mode; SetMode writes the superblock again with the old one, so a restart
// finds the mode in force. If that write fails too, the error says so.
func TestSetModeSecondSuperblockCopyFails(t *testing.T) {
	superblockWrite := func(p errinj.Predicate) errinj.Predicate {
		return errinj.And(errinj.Writes(), errinj.InRange(0, metadata.SuperblockArea), p)
	}
	for _, tc := range []struct {
		name     string
		pred     errinj.Predicate // on superblock writes
		recorded ocf.Mode         // what a restart finds
	}{
		{"rewrite works", errinj.OnIndex(1), ocf.ModeWT},
		{"rewrite fails", errinj.Not(errinj.OnIndex(0)), ocf.ModeWB},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fail := &errinj.Toggle{Injector: errinj.ErrInjected.If(superblockWrite(tc.pred))}
			env := ocftest.New(t, ocftest.Options{Lines: 16, Mode: ocf.ModeWT,
				WrapCache: func(d bdev.Device) bdev.Device { return errinj.Wrap(d, fail) }})
			fail.On()
			err := env.Cache.SetMode(ocf.ModeWB, false)
			fail.Off()
			expectEIO(t, "set mode wb", err)
			if rewriteFailed := strings.Contains(err.Error(), "rewriting"); rewriteFailed != (tc.recorded == ocf.ModeWB) {
				t.Errorf("error %q; want it to say whether the device still holds the change (%v)", err, tc.recorded == ocf.ModeWB)
			}
			if got := env.Cache.Mode(); got != ocf.ModeWT {
				t.Fatalf("set mode wb failed, but the mode in force is %s", got)
			}
			if got := reloaded(t, env).Mode(); got != tc.recorded {
				t.Fatalf("the device records mode %s, want %s", got, tc.recorded)
			}
		})
	}
}

// TestSetFallbackPTThresholdMetadataWriteFails: when the superblock cannot
// be written, SetFallbackPTThreshold returns EIO and leaves the threshold,
// the errors counted and the fallback as they were: a cache in fallback
// stays in it, and writes keep going pass-through.
func TestSetFallbackPTThresholdMetadataWriteFails(t *testing.T) {
	f := newFaultEnv(t, ocf.ModeWB)
	c, co := f.Cache, f.co()
	if err := c.SetFallbackPTThreshold(3); err != nil {
		t.Fatal(err)
	}
	volRead(t, co, 4096, 4096) // clean line 1
	f.cacheRd.on()
	volRead(t, co, 4096, 4096) // error 1, served from the core
	f.cacheRd.off()

	f.cacheWr.on()
	expectEIO(t, "set threshold 0", c.SetFallbackPTThreshold(0))
	f.cacheWr.off()
	if active, n := c.FallbackPT(); c.FallbackPTThreshold() != 3 || active || n != 1 {
		t.Fatalf("after the failed change: threshold %d, active %v, errors %d; want 3, false, 1", c.FallbackPTThreshold(), active, n)
	}
	if got := reloaded(t, f.Env).FallbackPTThreshold(); got != 3 {
		t.Fatalf("the device records threshold %d, want 3", got)
	}

	f.cacheRd.on()
	volRead(t, co, 4096, 4096)
	volRead(t, co, 4096, 4096) // errors 2 and 3: the old threshold still counts
	f.cacheRd.off()
	if active, n := c.FallbackPT(); !active || n != 3 {
		t.Fatalf("after 3 errors with threshold 3: active %v, errors %d", active, n)
	}

	f.cacheWr.on()
	expectEIO(t, "set threshold 10", c.SetFallbackPTThreshold(10))
	f.cacheWr.off()
	if active, n := c.FallbackPT(); c.FallbackPTThreshold() != 3 || !active || n != 3 {
		t.Fatalf("after the failed change in fallback: threshold %d, active %v, errors %d; want 3, true, 3", c.FallbackPTThreshold(), active, n)
	}
	before := c.Stats()
	volWrite(t, co, tagged('P', 8*4096, 4096), 8*4096, false)
	expectBytes(t, "fallback write reached the core", devRead(t, f.CoreDevs[0], 8*4096, 4096), tagged('P', 8*4096, 4096))
	if after := c.Stats(); after.Requests.WrPT != before.Requests.WrPT+1 || after.Usage.Occupancy != before.Usage.Occupancy {
		t.Errorf("write in fallback: wr_pt %d -> %d, occupancy %d -> %d; want one wr_pt, no insert",
			before.Requests.WrPT, after.Requests.WrPT, before.Usage.Occupancy, after.Usage.Occupancy)
	}

	if err := c.SetFallbackPTThreshold(10); err != nil {
		t.Fatal(err)
	}
	if active, n := c.FallbackPT(); c.FallbackPTThreshold() != 10 || active || n != 0 {
		t.Fatalf("after the change went through: threshold %d, active %v, errors %d; want 10, false, 0", c.FallbackPTThreshold(), active, n)
	}
	if got := reloaded(t, f.Env).FallbackPTThreshold(); got != 10 {
		t.Fatalf("the device records threshold %d, want 10", got)
	}
}

// TestSettingsConcurrentWithFailingWrites: every setter, each in its own
// goroutine, flips its setting while IO and flushes run and half the
// superblock writes fail. After each call the setting in force is the new
// one if the call succeeded and the old one if it failed (with EIO); the
// superblock writes, all under the settings lock (writeSuperblock panics
// otherwise in invariant builds), leave nothing racing; once the device
// works, a restart finds the settings last set.
func TestSettingsConcurrentWithFailingWrites(t *testing.T) {
	injected := &errinj.Counter{Injector: errinj.ErrInjected.If(errinj.And(errinj.Writes(),
		errinj.InRange(0, metadata.SuperblockArea), errinj.Randomly(0.5, 18)))}
	fail := &errinj.Toggle{Injector: injected}
	env := ocftest.New(t, ocftest.Options{Lines: 64, Mode: ocf.ModeWB, Cores: 2, SeqCutoff: ocf.CutoffNever{},
		WrapCache: func(d bdev.Device) bdev.Device { return errinj.Wrap(d, fail) }})
	c, co := env.Cache, env.Cores[1]
	const rounds = 40
	acp := ocf.DefaultCleaningParams()
	acp.Kind = ocf.CleanACP
	nhit := ocf.PromotionParams{Kind: ocf.PromoteNHitKind, InsertionThreshold: 2, TriggerThreshold: 0}
	never := ocf.SeqCutoffParams{Policy: ocf.SeqCutoffNever, ThresholdBytes: 4096, PromotionCount: 1}
	flipper := func(what string, set func(i int) error, get func() any, value func(i int) any) func() {
		return func() {
			for i := range rounds {
				before := get()
				err := set(i)
				want := value(i)
				if err != nil {
					if !errors.Is(err, errinj.ErrInjected) || bdev.Errno(err) != syscall.EIO {
						t.Errorf("%s round %d: %v, want the injected EIO", what, i, err)
						return
					}
					want = before
				}
				if got := get(); got != want {
					t.Errorf("%s round %d (error %v): %v in force, want %v", what, i, err, got, want)
					return
				}
			}
		}
	}
	modes := [2]ocf.Mode{ocf.ModeWT, ocf.ModeWB}
	cleanings := [2]ocf.CleaningParams{ocf.DefaultCleaningParams(), acp}
	promotions := [2]ocf.PromotionParams{ocf.DefaultPromotionParams(), nhit}
	seqs := [2]ocf.SeqCutoffParams{ocf.DefaultSeqCutoffParams(), never}
	work := []func(){
		flipper("mode", func(i int) error { return c.SetMode(modes[i%2], false) },
			func() any { return c.Mode() }, func(i int) any { return modes[i%2] }),
		flipper("cleaning", func(i int) error { return c.SetCleaning(cleanings[i%2]) },
			func() any { return c.Cleaning() }, func(i int) any { return cleanings[i%2] }),
		flipper("promotion", func(i int) error { return c.SetPromotion(promotions[i%2]) },
			func() any { return c.Promotion() }, func(i int) any { return promotions[i%2] }),
		flipper("sequential cutoff", func(i int) error { return co.SetSeqCutoff(seqs[i%2]) },
			func() any { return co.SeqCutoff() }, func(i int) any { return seqs[i%2] }),
		flipper("fallback threshold", func(i int) error { return c.SetFallbackPTThreshold(uint32(i % 2 * 100)) },
			func() any { return c.FallbackPTThreshold() }, func(i int) any { return uint32(i % 2 * 100) }),
		func() {
			for i := range rounds {
				off := int64(i%8) * 4096
				if err := env.Cores[0].WriteAt(tagged(byte(i), off, 4096), off, false); err != nil {
					t.Errorf("write round %d: %v", i, err)
					return
				}
				p := make([]byte, 4096)
				if err := env.Cores[0].ReadAt(p, off); err != nil || !bytes.Equal(p, tagged(byte(i), off, 4096)) {
					t.Errorf("read back round %d: %v (%s)", i, err, diffAt(p, tagged(byte(i), off, 4096)))
					return
				}
				if i%10 == 9 {
					if err := c.FlushDirty(nil, nil); err != nil {
						t.Errorf("flush round %d: %v", i, err)
						return
					}
				}
			}
		},
	}
	fail.On()
	var wg sync.WaitGroup
	for _, w := range work {
		wg.Go(w)
	}
	wg.Wait()
	fail.Off()
	if t.Failed() {
		return
	}
	if injected.Load() == 0 {
		t.Fatal("no superblock write failed; the test does not test anything")
	}
	setMode(t, c, ocf.ModeWT, false)
	for _, err := range []error{c.SetCleaning(acp), c.SetPromotion(nhit), co.SetSeqCutoff(never), c.SetFallbackPTThreshold(7)} {
		if err != nil {
			t.Fatal(err)
		}
	}
	r := reloaded(t, env)
	if r.Mode() != ocf.ModeWT || r.Cleaning() != acp || r.Promotion() != nhit || r.FallbackPTThreshold() != 7 {
		t.Errorf("reloaded: mode %s, cleaning %+v, promotion %+v, threshold %d; want wt, %+v, %+v, 7",
			r.Mode(), r.Cleaning(), r.Promotion(), r.FallbackPTThreshold(), acp, nhit)
	}
}
