package ocf_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"blockcache/internal/bdev"
	"blockcache/internal/bdev/bdevtest"
	"blockcache/internal/ocf"
	"blockcache/internal/ocf/ocftest"
)

// slowWrites makes every write to the wrapped device take at least delay,
// as a slow core does, so that writers get to run during a flush.
type slowWrites struct {
	bdev.Device
	delay time.Duration
}

func (s slowWrites) WriteAt(p []byte, off int64, fua bool) error {
	time.Sleep(s.delay)
	return s.Device.WriteAt(p, off, fua)
}

// dirtyLinesOf returns how many of co's lines are dirty.
func dirtyLinesOf(co *ocf.Core) int {
	return int(co.Stats().Usage.Dirty * 4096 / uint64(co.Cache().LineSize()))
}

// writers are bdevtest.Writers on co's lines [0, spanLines) (4 KiB lines).
type writers struct {
	*bdevtest.Writers
	co *ocf.Core
}

func startWriters(co *ocf.Core, n, spanLines int) *writers {
	return &writers{Writers: bdevtest.StartWriters(co, n, spanLines, 7), co: co}
}

// halt stops the writers and fails t if one of them failed.
func (w *writers) halt(t *testing.T) {
	t.Helper()
	if errs := w.Stop(); len(errs) > 0 {
		t.Fatal(errs[0])
	}
}

// check flushes the whole cache and checks that the volume and the core
// device both hold every block's last write.
func (w *writers) check(t *testing.T, env *ocftest.Env) {
	t.Helper()
	if err := env.Cache.FlushDirty(nil, nil); err != nil {
		t.Fatalf("final flush: %v", err)
	}
	got := make([]byte, 4096)
	for off, fill := range w.Acked() {
		want := bytes.Repeat([]byte{fill}, 4096)
		if err := w.co.ReadAt(got, off); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("volume block at %d: err %v, first byte %d, want %d", off, err, got[0], fill)
		}
		if err := env.CoreDevs[0].ReadAt(got, off); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("core device block at %d: err %v, first byte %d, want %d", off, err, got[0], fill)
		}
	}
	if errs := env.Cache.Check(); len(errs) > 0 {
		t.Fatalf("check: %v", errs)
	}
}

// flushEnv is a wb cache of 4096 4 KiB lines (never "full" for the
// sequential cutoff here) in front of a core whose
// writes take 20 µs, with the first dirtyLines lines of the core dirty.
func flushEnv(t *testing.T, dirtyLines int, wrap func(bdev.Device) bdev.Device) *ocftest.Env {
	t.Helper()
	env := ocftest.New(t, ocftest.Options{Lines: 4096, Mode: ocf.ModeWB, CoreBytes: 32 << 20,
		WrapCore: func(_ int, d bdev.Device) bdev.Device { return wrap(slowWrites{d, 20 * time.Microsecond}) }})
	buf := bytes.Repeat([]byte{0xd1}, 4096)
	for i := range dirtyLines {
		if err := env.Cores[0].WriteAt(buf, int64(i)*4096, false); err != nil {
			t.Fatal(err)
		}
	}
	if n := dirtyLinesOf(env.Cores[0]); n != dirtyLines {
		t.Fatalf("dirty lines before the flush: %d, want %d", n, dirtyLines)
	}
	return env
}

func noWrap(d bdev.Device) bdev.Device { return d }

// TestFlushConvergesUnderWriters: a flush ends while writers keep writing,
// with and without the write-through switch. With it, the dirty lines
// never outnumber those the flush has still to write back, and the cache
// goes back to write-back when the flush ends.
func TestFlushConvergesUnderWriters(t *testing.T) {
	for _, wt := range []bool{false, true} {
		t.Run(fmt.Sprintf("write_through=%v", wt), func(t *testing.T) {
			env := flushEnv(t, 600, noWrap)
			co := env.Cores[0]
			w := startWriters(co, 4, 800)
			defer w.halt(t)
			var calls, lastDone, lastTotal int
			var over []string
			res := make(chan error, 1)
			start := time.Now()
			go func() {
				res <- env.Cache.Flush(context.Background(), co, ocf.FlushOptions{WriteThrough: wt, Progress: func(done, total int) {
					calls++
					lastDone, lastTotal = done, total
					if wt && !co.WriteThroughHeld() {
						over = append(over, "write-through not held during the flush")
					}
					if n := dirtyLinesOf(co); wt && n > total-done {
						over = append(over, fmt.Sprintf("%d dirty lines with %d of %d written back", n, done, total))
					}
				}})
			}()
			select {
			case err := <-res:
				if err != nil {
					t.Fatalf("flush: %v", err)
				}
			case <-time.After(60 * time.Second):
				t.Fatalf("flush under writers did not end in 60 s (%d writes so far)", w.Writes.Load())
			}
			t.Logf("flush took %v, %d progress calls, last %d of %d lines", time.Since(start), calls, lastDone, lastTotal)
			if len(over) > 0 {
				t.Errorf("with write-through: %v", over)
			}
			// Without write-through, the lines dirty at the start are the
			// least the flush counts; with it, writes may clean some of
			// them before it counts them.
			if calls == 0 || lastDone > lastTotal || (!wt && lastTotal < 600) {
				t.Errorf("progress: %d calls, last %d of %d", calls, lastDone, lastTotal)
			}
			if co.WriteThroughHeld() {
				t.Error("write-through still held after the flush")
			}
			// Writers make dirty data again once the flush is over.
			deadline := time.Now().Add(10 * time.Second)
			for dirtyLinesOf(co) == 0 && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
			if dirtyLinesOf(co) == 0 {
				t.Error("no dirty line after the flush: the cache did not go back to write-back")
			}
			w.halt(t)
			if w.Writes.Load() == 0 {
				t.Fatal("the writers wrote nothing")
			}
			t.Logf("%d writes during and after the flush", w.Writes.Load())
			w.check(t, env)
		})
	}
}

// TestWriteThroughHoldLeavesNothingDirty: with the hold on (as delete does
// around its final flush), a flush under writers leaves no dirty line, and
// writes keep going through the cache (write hits) meanwhile.
func TestWriteThroughHoldLeavesNothingDirty(t *testing.T) {
	env := flushEnv(t, 600, noWrap)
	co := env.Cores[0]
	w := startWriters(co, 4, 800)
	defer func() { w.halt(t); w.check(t, env) }()
	time.Sleep(10 * time.Millisecond)

	release := env.Cache.HoldWriteThrough(co)
	if err := env.Cache.FlushDirty(co, nil); err != nil {
		t.Fatal(err)
	}
	before := w.Writes.Load()
	time.Sleep(20 * time.Millisecond)
	if n := dirtyLinesOf(co); n != 0 {
		t.Errorf("%d dirty lines after a flush under the write-through hold", n)
	}
	if w.Writes.Load() == before {
		t.Error("no write completed while held write-through")
	}
	if env.Cache.Mode() != ocf.ModeWB {
		t.Errorf("the hold changed the cache's mode to %s", env.Cache.Mode())
	}
	release()
	release() // a second call does nothing
	if co.WriteThroughHeld() {
		t.Fatal("write-through still held after release")
	}
}

// TestWriteThroughHoldWaitsForWrites: the hold returns only after writes
// that started before it (in write-back) are done, so none of them can
// make a line dirty once it has returned.
func TestWriteThroughHoldWaitsForWrites(t *testing.T) {
	var armed atomic.Bool // set once the cache is built
	env := ocftest.New(t, ocftest.Options{Lines: 64, Mode: ocf.ModeWB,
		WrapCache: func(d bdev.Device) bdev.Device {
			return bdevtest.NewIOGate(d, func(write bool, off, n int64) bool { return armed.Load() && write && n == 4096 })
		}})
	gate := env.Cache.Device().(*bdevtest.IOGate)
	co := env.Cores[0]
	armed.Store(true)
	wrote := make(chan error, 1)
	go func() { wrote <- co.WriteAt(bytes.Repeat([]byte{7}, 4096), 0, false) }()
	if !gate.WaitHeld(1, 10*time.Second) {
		t.Fatal("the write did not reach the cache device")
	}
	held := make(chan func(), 1)
	go func() { held <- env.Cache.HoldWriteThrough(co) }()
	select {
	case <-held:
		t.Fatal("HoldWriteThrough returned while a write-back write was in flight")
	case <-time.After(50 * time.Millisecond):
	}
	gate.Release()
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
	release := <-held
	defer release()
	if n := dirtyLinesOf(co); n != 1 {
		t.Fatalf("dirty lines after the write-back write: %d, want 1", n)
	}
	// Under the hold, a write over the dirty line cleans it.
	if err := co.WriteAt(bytes.Repeat([]byte{8}, 4096), 0, false); err != nil {
		t.Fatal(err)
	}
	if n := dirtyLinesOf(co); n != 0 {
		t.Errorf("dirty lines after a write under the hold: %d, want 0", n)
	}
	got := make([]byte, 4096)
	if err := env.CoreDevs[0].ReadAt(got, 0); err != nil || got[0] != 8 {
		t.Errorf("core after a write under the hold: %d, %v (want 8: written through)", got[0], err)
	}
}

// TestFlushCancel: with the core's writes held at a gate, a cancelled flush
// ends as soon as the batch in flight is done, writes back nothing more,
// restores write-back, and leaves a consistent cache whose remaining dirty
// lines a later flush writes back.
func TestFlushCancel(t *testing.T) {
	const dirty = 300 // three batches of 128
	var gate *bdevtest.IOGate
	var armed atomic.Bool // set once the lines are dirty
	env := flushEnv(t, dirty, func(d bdev.Device) bdev.Device {
		gate = bdevtest.NewIOGate(d, func(write bool, _, _ int64) bool { return armed.Load() && write })
		return gate
	})
	co := env.Cores[0]
	armed.Store(true)
	ctx, cancel := context.WithCancel(context.Background())
	var flushed atomic.Int64
	res := make(chan error, 1)
	go func() {
		res <- env.Cache.Flush(ctx, co, ocf.FlushOptions{WriteThrough: true,
			Progress: func(done, _ int) { flushed.Store(int64(done)) }})
	}()
	if !gate.WaitHeld(1, 10*time.Second) {
		t.Fatal("the flush wrote nothing to the core")
	}
	cancel()
	select {
	case err := <-res:
		t.Fatalf("flush returned while its batch was held at the gate: %v", err)
	case <-time.After(20 * time.Millisecond):
	}
	err := bdevtest.ReleaseAndReceive(t, gate, res, "cancelled flush")
	if !errors.Is(err, ocf.ErrFlushCancelled) {
		t.Fatalf("cancelled flush: %v, want ErrFlushCancelled", err)
	}
	left := dirtyLinesOf(co)
	if done := int(flushed.Load()); done > 128 || left != dirty-done || left == 0 {
		t.Errorf("cancelled flush wrote back %d lines, %d still dirty: want at most one batch (128) of %d", done, left, dirty)
	}
	if co.WriteThroughHeld() {
		t.Error("write-through still held after the cancelled flush")
	}
	if errs := env.Cache.Check(); len(errs) > 0 {
		t.Fatalf("check after cancel: %v", errs)
	}
	// The rest is written back by the next flush.
	if err := env.Cache.FlushDirty(nil, nil); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 4096)
	for i := range dirty {
		if err := env.CoreDevs[0].ReadAt(got, int64(i)*4096); err != nil || got[0] != 0xd1 {
			t.Fatalf("core line %d after the flush: %#x, %v", i, got[0], err)
		}
	}

	// A flush whose context is already cancelled writes nothing.
	if err := co.WriteAt(bytes.Repeat([]byte{1}, 4096), 0, false); err != nil {
		t.Fatal(err)
	}
	if err := env.Cache.Flush(ctx, nil, ocf.FlushOptions{}); !errors.Is(err, ocf.ErrFlushCancelled) {
		t.Errorf("flush with a cancelled context: %v", err)
	}
	if n := dirtyLinesOf(co); n != 1 {
		t.Errorf("dirty lines after a flush cancelled before it began: %d, want 1", n)
	}
}
