package vbdev_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"blockcache/internal/bdev"
	"blockcache/internal/bdev/bdevtest"
	"blockcache/internal/bdev/errinj"
	"blockcache/internal/bdev/malloc"
	"blockcache/internal/ocf"
	"blockcache/internal/vbdev"
)

// slowCore makes every write to the wrapped device take at least 20 µs, so
// that writers get to run while data is written back.
type slowCore struct{ bdev.Device }

func (s slowCore) WriteAt(p []byte, off int64, fua bool) error {
	time.Sleep(20 * time.Microsecond)
	return s.Device.WriteAt(p, off, fua)
}

// flushVolume creates wb vbdev V on a 16 MiB malloc cache and a 64 MiB
// core, the core wrapped by wrap and registered as "Core", writes the
// first dirty 4 KiB lines of V, and returns V.
func flushVolume(t *testing.T, e *env, dirty int, wrap func(bdev.Device) bdev.Device) (vol bdev.Device, core *malloc.Device) {
	t.Helper()
	e.malloc("Cache", 16)
	core, err := malloc.New("Core", uuid.Nil, 512, 64<<20/512)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.reg.Register(wrap(core)); err != nil {
		t.Fatal(err)
	}
	e.create("V", "wb", "Cache", "Core")
	vol, err = e.reg.Lookup("V")
	if err != nil {
		t.Fatal(err)
	}
	buf := bytes.Repeat([]byte{0xd1}, 4096)
	for i := range dirty {
		if err := vol.WriteAt(buf, int64(i)*4096, false); err != nil {
			t.Fatal(err)
		}
	}
	if n := dirtyLines(t, e, "V"); n != dirty {
		t.Fatalf("dirty lines before the test: %d, want %d", n, dirty)
	}
	return vol, core
}

func dirtyLines(t *testing.T, e *env, name string) int {
	t.Helper()
	s, err := e.m.Stats(name)
	if err != nil {
		t.Fatal(err)
	}
	return int(s.Usage.Dirty) // 4 KiB lines
}

// volWriters are bdevtest.Writers on a volume.
type volWriters struct{ *bdevtest.Writers }

func startVolWriters(vol bdev.Device, n, span int) volWriters {
	return volWriters{bdevtest.StartWriters(vol, n, span, 11)}
}

// endsUnder runs op (what, such as a delete) while the writers run, and
// fails the test if it fails or has not ended after 60 s.
func (w volWriters) endsUnder(t *testing.T, what string, op func() error) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- op() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("%s under writers did not end in 60 s (%d writes)", what, w.Writes.Load())
	}
}

// checkDevice checks the first span blocks of dev: each holds its last
// acknowledged write (or, for a block whose last write failed, that
// write), or if no writer touched it, the 0xd1 that flushVolume wrote below
// dirty and zeroes above.
func (w volWriters) checkDevice(t *testing.T, dev bdev.Device, span, dirty int, what string) {
	t.Helper()
	got := make([]byte, 4096)
	for i := range span {
		off := int64(i) * 4096
		if err := dev.ReadAt(got, off); err != nil {
			t.Fatalf("%s: read at %d: %v", what, off, err)
		}
		acked, ok, failed, hasFailed := w.Last(off)
		want := []byte{acked}
		switch {
		case ok:
		case i < dirty:
			want[0] = 0xd1
		default:
			want[0] = 0
		}
		if hasFailed {
			want = append(want, failed)
		}
		if !bytes.Equal(got, bytes.Repeat(got[:1], 4096)) || !bytes.Contains(want, got[:1]) {
			t.Fatalf("%s: block at %d holds %#x..., want one of %#v", what, off, got[0], want)
		}
	}
}

// waitFlush polls V's flush until it has ended, calling during with each
// status seen while it runs, and returns the final status.
func waitFlush(t *testing.T, e *env, timeout time.Duration, during func(vbdev.FlushStatus)) vbdev.FlushStatus {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		st, err := e.m.FlushStatus("V")
		if err != nil {
			t.Fatal(err)
		}
		if !st.InProgress {
			return st
		}
		if during != nil {
			during(st)
		}
		if time.Now().After(deadline) {
			t.Fatalf("flush still running after %v: %+v", timeout, st)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestFlushStartConvergesUnderWriters: bdev_ocf_flush_start ends while the
// volume keeps being written, with and without write_through; with it,
// the dirty lines never outnumber those left to write back, and the volume
// goes back to write-back afterwards. The status reports bytes left and a
// rate while it runs.
func TestFlushStartConvergesUnderWriters(t *testing.T) {
	for _, wt := range []bool{false, true} {
		t.Run(fmt.Sprintf("write_through=%v", wt), func(t *testing.T) {
			e := newEnv(t)
			const dirty = 1500
			vol, core := flushVolume(t, e, dirty, func(d bdev.Device) bdev.Device { return slowCore{d} })
			w := startVolWriters(vol, 4, 2000)
			defer w.Stop()
			if err := e.m.FlushStart("V", wt); err != nil {
				t.Fatal(err)
			}
			var seen, withRate int
			var bad []string
			final := waitFlush(t, e, 60*time.Second, func(st vbdev.FlushStatus) {
				if st.Done == 0 {
					return // the total may be the estimate taken before the hold
				}
				seen++
				if st.BytesPerSec > 0 {
					withRate++
				}
				if want := int64(st.Total-st.Done) * 4096; st.RemainingBytes != want || st.WriteThrough != wt {
					bad = append(bad, fmt.Sprintf("%+v: want %d bytes left, write-through %v", st, want, wt))
				}
				if !wt {
					return
				}
				n := dirtyLines(t, e, "V")
				if again, _ := e.m.FlushStatus("V"); again.InProgress && n > st.Total-st.Done {
					bad = append(bad, fmt.Sprintf("%d dirty lines with %d of %d written back", n, st.Done, st.Total))
				}
			})
			if final.Err != nil || final.Done == 0 || final.Done > final.Total || (!wt && final.Total < dirty) {
				t.Fatalf("final status %+v", final)
			}
			if final.RemainingBytes != 0 || final.BytesPerSec <= 0 {
				t.Errorf("final status %+v: want nothing left and an average rate", final)
			}
			if len(bad) > 0 {
				t.Errorf("statuses during the flush: %v", bad)
			}
			if seen > 0 && withRate == 0 {
				t.Errorf("%d statuses during the flush, none with a rate", seen)
			}
			// The volume is write-back again: the writers make lines dirty.
			deadline := time.Now().Add(10 * time.Second)
			for dirtyLines(t, e, "V") == 0 && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
			if dirtyLines(t, e, "V") == 0 {
				t.Error("no dirty line after the flush: the volume did not go back to write-back")
			}
			if errs := w.Stop(); len(errs) > 0 || w.Writes.Load() == 0 {
				t.Fatalf("writers: %d writes, errors %v", w.Writes.Load(), errs)
			}
			t.Logf("%d writes; flush %+v", w.Writes.Load(), final)
			if err := e.m.Delete("V"); err != nil {
				t.Fatal(err)
			}
			w.checkDevice(t, core, 2000, dirty, "core after delete")
		})
	}
}

// TestFlushCancel: with the core's writes held at a gate, bdev_ocf_flush_cancel
// waits for the batch in flight, then the flush has stopped: status
// cancelled, at most one batch written back, the write-through hold gone;
// a delete afterwards writes the rest back.
func TestFlushCancel(t *testing.T) {
	e := newEnv(t)
	const dirty = 300
	var gate *bdevtest.IOGate
	var armed atomic.Bool
	vol, core := flushVolume(t, e, dirty, func(d bdev.Device) bdev.Device {
		gate = bdevtest.NewIOGate(d, func(write bool, _, _ int64) bool { return armed.Load() && write })
		return gate
	})
	if ok, err := e.m.FlushCancel(context.Background(), "V"); ok || err != nil {
		t.Errorf("cancel with no flush ever started: %v, %v", ok, err)
	}
	armed.Store(true)
	if err := e.m.FlushStart("V", true); err != nil {
		t.Fatal(err)
	}
	if !gate.WaitHeld(1, 10*time.Second) {
		t.Fatal("the flush wrote nothing to the core")
	}
	type result struct {
		ok  bool
		err error
	}
	res := make(chan result, 1)
	go func() {
		ok, err := e.m.FlushCancel(context.Background(), "V")
		res <- result{ok, err}
	}()
	select {
	case r := <-res:
		t.Fatalf("cancel returned while the batch was held at the gate: %+v", r)
	case <-time.After(20 * time.Millisecond):
	}
	if st, _ := e.m.FlushStatus("V"); !st.InProgress {
		t.Errorf("status while the cancelled batch is held: %+v, want still in progress", st)
	}
	r := bdevtest.ReleaseAndReceive(t, gate, res, "cancel")
	if !r.ok || r.err != nil {
		t.Fatalf("cancel of a running flush: %v, %v", r.ok, r.err)
	}
	st, err := e.m.FlushStatus("V")
	if err != nil {
		t.Fatal(err)
	}
	if st.InProgress || !errors.Is(st.Err, ocf.ErrFlushCancelled) || st.Done > 128 || st.Total != dirty ||
		st.RemainingBytes != int64(st.Total-st.Done)*4096 || !st.WriteThrough {
		t.Errorf("status after cancel: %+v", st)
	}
	if n := dirtyLines(t, e, "V"); n != dirty-st.Done {
		t.Errorf("%d dirty lines after the cancel, want %d - %d", n, dirty, st.Done)
	}
	// The hold is gone: a write to a clean line makes it dirty.
	if err := vol.WriteAt(bytes.Repeat([]byte{0xd1}, 4096), 1000*4096, false); err != nil {
		t.Fatal(err)
	}
	if n := dirtyLines(t, e, "V"); n != dirty-st.Done+1 {
		t.Errorf("a write after the cancel left %d dirty lines, want %d: still write-through?", n, dirty-st.Done+1)
	}
	if ok, err := e.m.FlushCancel(context.Background(), "V"); ok || err != nil {
		t.Errorf("cancel with no flush running: %v, %v", ok, err)
	}
	if _, err := e.m.FlushCancel(context.Background(), "nope"); !errors.Is(err, vbdev.ErrNoSuchVbdev) {
		t.Errorf("cancel of an unknown vbdev: %v", err)
	}
	if err := e.m.Delete("V"); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 4096)
	for _, i := range []int{0, dirty - 1, 1000} {
		if err := core.ReadAt(got, int64(i)*4096); err != nil || got[0] != 0xd1 {
			t.Fatalf("core line %d after delete: %#x, %v", i, got[0], err)
		}
	}
}

// TestDeleteConvergesUnderWriters: bdev_ocf_delete of a busy wb volume
// ends (its write-back runs with the writes held write-through), and the
// core then holds every acknowledged write.
func TestDeleteConvergesUnderWriters(t *testing.T) {
	e := newEnv(t)
	const dirty = 1500
	vol, core := flushVolume(t, e, dirty, func(d bdev.Device) bdev.Device { return slowCore{d} })
	w := startVolWriters(vol, 4, 2000)
	defer w.Stop()
	time.Sleep(20 * time.Millisecond)
	start := time.Now()
	w.endsUnder(t, "delete", func() error { return e.m.Delete("V") })
	took := time.Since(start)
	for _, err := range w.Stop() {
		if !errors.Is(err, bdev.ErrClosed) && !errors.Is(err, ocf.ErrStopped) {
			t.Errorf("a writer failed with %v, want the volume closed or stopped", err)
		}
	}
	t.Logf("delete took %v under %d writes", took, w.Writes.Load())
	w.checkDevice(t, core, 2000, dirty, "core after delete")
}

// TestDeleteFailureRestoresWriteBack: a delete whose write-back fails
// leaves the vbdev serving in write-back, its dirty data kept.
func TestDeleteFailureRestoresWriteBack(t *testing.T) {
	e := newEnv(t)
	var failing atomic.Bool
	vol, _ := flushVolume(t, e, 10, func(d bdev.Device) bdev.Device {
		return errinj.Wrap(d, errinj.InjectorFunc(func(op errinj.Op) error {
			if failing.Load() && op.Kind == errinj.OpWrite {
				return errinj.ErrInjected
			}
			return nil
		}))
	})
	failing.Store(true)
	if err := e.m.Delete("V"); !errors.Is(err, errinj.ErrInjected) {
		t.Fatalf("delete with a failing core: %v, want the injected error", err)
	}
	if !e.started("V") {
		t.Fatal("V not started after a failed delete")
	}
	if n := dirtyLines(t, e, "V"); n != 10 {
		t.Errorf("dirty lines after a failed delete: %d, want 10", n)
	}
	if err := vol.WriteAt(bytes.Repeat([]byte{1}, 4096), 100*4096, false); err != nil {
		t.Fatal(err)
	}
	if n := dirtyLines(t, e, "V"); n != 11 {
		t.Errorf("a write after the failed delete left %d dirty lines, want 11: still write-through?", n)
	}
	failing.Store(false)
	if err := e.m.Delete("V"); err != nil {
		t.Fatal(err)
	}
}

// TestDeleteHoldsWriteThrough: while a delete writes back (its batch held
// at the core's gate), a write to a line the cache does not hold goes to
// the core (it waits at the gate too) instead of making new dirty data.
func TestDeleteHoldsWriteThrough(t *testing.T) {
	e := newEnv(t)
	var gate *bdevtest.IOGate
	var armed, reached atomic.Bool
	const probe = 500 * 4096
	vol, core := flushVolume(t, e, 10, func(d bdev.Device) bdev.Device {
		gate = bdevtest.NewIOGate(d, func(write bool, off, _ int64) bool {
			if write && off == probe {
				reached.Store(true)
			}
			return armed.Load() && write
		})
		return gate
	})
	armed.Store(true)
	deleted := make(chan error, 1)
	go func() { deleted <- e.m.Delete("V") }()
	defer gate.Release()
	if !gate.WaitHeld(1, 10*time.Second) {
		t.Fatal("the delete wrote nothing to the core")
	}
	wrote := make(chan error, 1)
	go func() { wrote <- vol.WriteAt(bytes.Repeat([]byte{0x5a}, 4096), probe, false) }()
	for deadline := time.Now().Add(5 * time.Second); !reached.Load(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			select {
			case err := <-wrote:
				t.Fatalf("a write during the delete's write-back completed without the core (%v): not write-through", err)
			default:
				t.Fatal("a write during the delete's write-back did not reach the core in 5 s")
			}
		}
	}
	gate.Release()
	if err := <-wrote; err != nil {
		t.Fatalf("write during the delete: %v", err)
	}
	if err := <-deleted; err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 4096)
	if err := core.ReadAt(got, probe); err != nil || got[0] != 0x5a {
		t.Fatalf("core after the delete: %#x, %v", got[0], err)
	}
}

// TestShutdownWritesBackUnderWriters: a shutdown that writes back ends
// while the volume is still being written (its writes held write-through
// during the write-back), and the core then holds every acknowledged write.
func TestShutdownWritesBackUnderWriters(t *testing.T) {
	e := newEnv(t)
	const dirty = 1500
	vol, core := flushVolume(t, e, dirty, func(d bdev.Device) bdev.Device { return slowCore{d} })
	w := startVolWriters(vol, 4, 2000)
	defer w.Stop()
	if err := e.m.FlushStart("V", false); err != nil { // cancelled by the shutdown
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
	w.endsUnder(t, "shutdown", func() error { return e.m.Shutdown(true) })
	for _, err := range w.Stop() {
		if !errors.Is(err, bdev.ErrClosed) && !errors.Is(err, ocf.ErrStopped) {
			t.Errorf("a writer failed with %v, want the volume closed or stopped", err)
		}
	}
	w.checkDevice(t, core, 2000, dirty, "core after shutdown")
}
