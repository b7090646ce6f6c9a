package ocf_test

import (
	"bytes"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"blockcache/internal/bdev"
	"blockcache/internal/bdev/bdevtest"
	"blockcache/internal/bdev/malloc"
	"blockcache/internal/ocf"
)

// pressureEnv is a wb cache of 1024 lines whose cleaning has a dirty-ratio
// target, driven by CleanStep and a fake clock; its core's IO goes through
// a gate that holdWrites replaces.
type pressureEnv struct {
	c       *ocf.Cache
	co      *ocf.Core
	cdev    *malloc.Device
	core    *malloc.Device
	gate    gateSwitch
	clk     *fakeClock
	written int // lines written so far, line k at byte k*4096
}

// gateSwitch forwards IO to the current gate, so that a test can hold IO
// at a fresh gate (fresh counters) more than once.
type gateSwitch struct {
	bdev.Device
	cur atomic.Pointer[bdevtest.IOGate]
}

func (s *gateSwitch) ReadAt(p []byte, off int64) error { return s.cur.Load().ReadAt(p, off) }
func (s *gateSwitch) WriteAt(p []byte, off int64, fua bool) error {
	return s.cur.Load().WriteAt(p, off, fua)
}

// holdWrites makes every core write from now on wait at a new gate, which
// it returns; the test releases it.
func (e *pressureEnv) holdWrites(t *testing.T) *bdevtest.IOGate {
	g := bdevtest.NewIOGate(e.core, func(write bool, _, _ int64) bool { return write })
	t.Cleanup(g.Release)
	e.gate.cur.Store(g)
	return g
}

func newPressureEnv(t *testing.T, ratio, inflight uint32) *pressureEnv {
	t.Helper()
	e := &pressureEnv{clk: &fakeClock{now: time.Unix(1000, 0)}}
	var err error
	if e.cdev, err = malloc.New("cache", uuid.Nil, 512, uint64(ocf.DeviceBytesFor(1024, 4096)/512)); err != nil {
		t.Fatal(err)
	}
	p := ocf.DefaultCleaningParams()
	p.ALRU.MaxDirtyRatio, p.MaxInflight = ratio, inflight
	if e.c, err = ocf.New(e.cdev, ocf.Config{Mode: ocf.ModeWB, Clock: e.clk, Cleaning: &p, SeqCutoff: ocf.CutoffNever{}}); err != nil {
		t.Fatal(err)
	}
	if e.core, err = malloc.New("core", uuid.Nil, 512, (64<<20)/512); err != nil {
		t.Fatal(err)
	}
	e.gate.Device = e.core
	e.gate.cur.Store(bdevtest.NewIOGate(e.core, func(bool, int64, int64) bool { return false }))
	if e.co, err = e.c.AddCore(ocf.CoreConfig{Device: &e.gate, Volume: bdev.Info{Name: "vol"}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if errs := e.c.Check(); len(errs) > 0 {
			t.Errorf("cache check at cleanup: %v", errs)
		}
	})
	return e
}

// lineData is what write puts in line k.
func lineData(k int) []byte { return bytes.Repeat([]byte{byte(k%251 + 1)}, 4096) }

// write dirties n more lines.
func (e *pressureEnv) write(t *testing.T, n int) {
	t.Helper()
	for range n {
		if err := e.co.WriteAt(lineData(e.written), int64(e.written)*4096, false); err != nil {
			t.Fatal(err)
		}
		e.written++
	}
}

// coreHolds reports whether the core device itself holds line k's data.
func (e *pressureEnv) coreHolds(t *testing.T, k int) bool {
	t.Helper()
	b := make([]byte, 4096)
	if err := e.core.ReadAt(b, int64(k)*4096); err != nil {
		t.Fatal(err)
	}
	return bytes.Equal(b, lineData(k))
}

// TestPressureCleaning: above the dirty-ratio target alru cleans while the
// cache is busy, the least recently used dirty lines first, and steps
// again at once until the target is met; at the target it cleans nothing
// and looks again after the poll interval.
func TestPressureCleaning(t *testing.T) {
	e := newPressureEnv(t, 50, 32)
	target := e.c.NumLines() / 2
	e.write(t, target)
	if n, next, err := e.c.CleanStep(e.clk.Now()); n != 0 || err != nil || next != 100*time.Millisecond {
		t.Fatalf("at the target: cleaned %d (err %v), next %v; want nothing, next look in 100 ms", n, err, next)
	}
	e.write(t, 300)
	var steps []int
	for range 100 {
		e.write(t, 1) // busy all along
		n, next, err := e.c.CleanStep(e.clk.add(time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			if next != 100*time.Millisecond {
				t.Fatalf("back at the target: next %v, want 100 ms", next)
			}
			break
		}
		if next != 0 {
			t.Fatalf("step cleaned %d and waits %v with lines still over", n, next)
		}
		steps = append(steps, n)
	}
	if got := int(dirtyLines(e.c)); got != target || len(steps) < 2 {
		t.Fatalf("after pressure cleaning (steps %v) %d lines dirty, want the target %d", steps, got, target)
	}
	// The oldest lines were cleaned (written back), the newest stay dirty.
	for k := range e.written {
		clean := k < e.written-target
		if got := e.coreHolds(t, k); got != clean {
			t.Fatalf("line %d of %d: on the core %v, want %v (LRU lines cleaned first)", k, e.written, got, clean)
		}
	}
}

// stepHeld runs one CleanStep with the core's writes held at the gate and
// returns how many write-backs were in flight at once (waiting until want
// are, then a little longer for any more) and how many lines it cleaned.
func (e *pressureEnv) stepHeld(t *testing.T, want int64) (held int64, cleaned int) {
	t.Helper()
	g := e.holdWrites(t)
	done := make(chan int, 1)
	go func() {
		n, _, err := e.c.CleanStep(e.clk.add(time.Millisecond))
		if err != nil {
			t.Error(err)
		}
		done <- n
	}()
	ok := g.WaitHeld(want, 10*time.Second)
	time.Sleep(20 * time.Millisecond)
	held = g.MaxHeld()
	g.Release()
	if !ok {
		t.Fatalf("step: %d write-backs in flight, want %d", held, want)
	}
	return held, <-done
}

// TestPressurePacing: the further above the target, the more lines are in
// flight at once, never more than max_inflight; other IO goes on
// meanwhile.
func TestPressurePacing(t *testing.T) {
	e := newPressureEnv(t, 50, 32)
	target := e.c.NumLines() / 2
	band := e.c.NumLines() * 5 / 100
	e.write(t, target+10)
	want := int64((10*32 + band - 1) / band) // in proportion: 32 lines from 5% of the cache above the target
	held, n := e.stepHeld(t, want)
	if held != want || n != 10 {
		t.Fatalf("10 lines over the target: %d write-backs at once, %d cleaned; want %d (paced) and all 10", held, n, want)
	}
	e.write(t, 400)
	held, n = e.stepHeld(t, 32)
	if held != 32 || n != 4*32 {
		t.Fatalf("400 lines over the target: %d write-backs at once, %d cleaned; want 32 (max_inflight) and 128 (4 a slot)", held, n)
	}
}

// TestPressureInflightBound: a pressure step has at most MaxInflight lines
// in flight to the core, and IO to other lines goes on meanwhile.
func TestPressureInflightBound(t *testing.T) {
	e := newPressureEnv(t, 0, 4)
	e.write(t, 40)
	g := e.holdWrites(t)
	type result struct {
		n   int
		err error
	}
	done := make(chan result, 1)
	go func() {
		n, _, err := e.c.CleanStep(e.clk.Now())
		done <- result{n, err}
	}()
	if !g.WaitHeld(4, 10*time.Second) {
		g.Release()
		t.Fatalf("pressure step with 40 lines over a 0%% target: %d core writes in flight, want 4", g.Held())
	}
	// A write to the newest line and a read of the next newest, not
	// among the lines being written back, complete while the step waits.
	if err := e.co.WriteAt(lineData(39), 39*4096, false); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 4096)
	if err := e.co.ReadAt(b, 38*4096); err != nil || !bytes.Equal(b, lineData(38)) {
		t.Fatalf("read during the step: %v", err)
	}
	time.Sleep(20 * time.Millisecond)
	held := g.MaxHeld()
	g.Release()
	r := <-done
	if held != 4 || r.n != 16 || r.err != nil {
		t.Fatalf("max_inflight 4: at most %d core writes at once, step cleaned %d (err %v); want 4, and 16 (4 a slot)", held, r.n, r.err)
	}
}

// TestPressureNotReached: a workload that stays at or below the target
// sees no cleaning at all (no core write, SPDK's counters unchanged), and
// with the target at 100 (OCF's default) a cache full of dirty lines is
// not cleaned while busy.
func TestPressureNotReached(t *testing.T) {
	for _, ratio := range []uint32{90, 100} {
		e := newPressureEnv(t, ratio, 32)
		lines := e.c.NumLines() * int(ratio) / 100
		for range 3 {
			e.write(t, lines/3)
			if n, _, err := e.c.CleanStep(e.clk.add(time.Second)); n != 0 || err != nil {
				t.Fatalf("target %d%%, %d of %d lines dirty: cleaned %d (err %v)", ratio, e.written, e.c.NumLines(), n, err)
			}
		}
		if s := e.c.Stats(); s.Blocks.CoreWr != 0 || s.Blocks.CacheRd != 0 {
			t.Fatalf("target %d%% never reached: core_volume_wr %d, cache_volume_rd %d; want 0", ratio, s.Blocks.CoreWr, s.Blocks.CacheRd)
		}
	}
}

// TestCleaningParamsRanges: the dirty-ratio target and max_inflight are
// refused out of range, naming the parameter.
func TestCleaningParamsRanges(t *testing.T) {
	for _, c := range []struct {
		set  func(*ocf.CleaningParams)
		name string
	}{
		{func(p *ocf.CleaningParams) { p.ALRU.MaxDirtyRatio = 101 }, "max_dirty_ratio 101%"},
		{func(p *ocf.CleaningParams) { p.MaxInflight = 0 }, "max_inflight 0 "},
		{func(p *ocf.CleaningParams) { p.MaxInflight = 1025 }, "max_inflight 1025 "},
	} {
		p := ocf.DefaultCleaningParams()
		c.set(&p)
		if err := p.Validate(); !errors.Is(err, ocf.ErrInvalidConfig) || !contains(err.Error(), c.name) {
			t.Errorf("%s: %v", c.name, err)
		}
	}
	p := ocf.DefaultCleaningParams()
	p.ALRU.MaxDirtyRatio, p.MaxInflight = 0, 1024
	if err := p.Validate(); err != nil {
		t.Errorf("edges 0%% and 1024: %v", err)
	}
}
