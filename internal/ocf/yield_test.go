package ocf_test

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"blockcache/internal/bdev"
	"blockcache/internal/bdev/bdevtest"
	"blockcache/internal/ocf"
	"blockcache/internal/ocf/ocftest"
)

// logLines is a list of lines appended to by concurrent IO and taken by
// the test.
type logLines struct {
	mu  sync.Mutex
	log []string
}

func (l *logLines) add(s string) {
	l.mu.Lock()
	l.log = append(l.log, s)
	l.mu.Unlock()
}

// take returns the lines added since the last take.
func (l *logLines) take() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	lines := l.log
	l.log = nil
	return lines
}

// writeLog wraps a core device and logs the start and the end of each
// write, by the first byte of its data.
type writeLog struct {
	bdev.Device
	logLines
}

func (w *writeLog) WriteAt(p []byte, off int64, fua bool) error {
	w.add(fmt.Sprintf("start %#x", p[0]))
	err := w.Device.WriteAt(p, off, fua)
	w.add(fmt.Sprintf("end %#x", p[0]))
	return err
}

// heldCore builds a one-core cache in mode whose next core write after
// armed is set waits at the gate; later ones do not.
func heldCore(t *testing.T, mode ocf.Mode) (*ocftest.Env, *bdevtest.IOGate, *atomic.Bool, *writeLog) {
	return gatedCore(t, mode, func(d bdev.Device) *writeLog { return &writeLog{Device: d} })
}

// gatedCore is heldCore with the core's recorder made by wrap, which gets
// the gated device: the gate sits below it, so the recorder sees a held
// write before it waits.
func gatedCore[W bdev.Device](t *testing.T, mode ocf.Mode, wrap func(bdev.Device) W) (*ocftest.Env, *bdevtest.IOGate, *atomic.Bool, W) {
	t.Helper()
	var gate *bdevtest.IOGate
	var rec W
	armed := new(atomic.Bool)
	env := ocftest.New(t, ocftest.Options{Lines: 16, Mode: mode, SeqCutoff: ocf.CutoffNever{},
		WrapCore: func(_ int, d bdev.Device) bdev.Device {
			gate = bdevtest.NewIOGate(d, func(write bool, _, _ int64) bool { return write && armed.CompareAndSwap(true, false) })
			rec = wrap(gate)
			return rec
		}})
	t.Cleanup(gate.Release)
	return env, gate, armed, rec
}

// within runs f and fails t if it does not return within 2 s (it is left
// to end when the test's gate opens).
func within(t *testing.T, what string, f func() error) {
	t.Helper()
	res := make(chan error, 1)
	go func() { res <- f() }()
	select {
	case err := <-res:
		if err != nil {
			t.Errorf("%s: %v", what, err)
		}
	case <-time.After(2 * time.Second):
		t.Errorf("%s waited for a write held at the core", what)
	}
}

// readInto returns a func reading n bytes at off of co and checking them
// against want.
func readWant(co *ocf.Core, off int64, want []byte) func() error {
	return func() error {
		p := make([]byte, len(want))
		if err := co.ReadAt(p, off); err != nil {
			return err
		}
		if !bytes.Equal(p, want) {
			return fmt.Errorf("read at %d: %s", off, diffAt(p, want))
		}
		return nil
	}
}

// TestWriteThroughCoreWriteYieldsToReaders holds a write-through write at
// the core and checks what goes on meanwhile: a hit on the line written
// (the old data, through the waiting and the non-waiting hit paths), a hit
// on another line of the same stripe and a miss on a third go on, and an
// overlapping second write waits, without holding up the readers either.
// Released, the writes reach the core one after the other, and the cache
// and the core hold the first write with the second laid over it.
func TestWriteThroughCoreWriteYieldsToReaders(t *testing.T) {
	const ls = 4096
	env, gate, armed, wlog := heldCore(t, ocf.ModeWT)
	co := env.Cores[0]
	a, b, miss := uint64(3), uint64(3+64), uint64(3+128)
	if !co.SameStripe(a, b) || !co.SameStripe(a, miss) {
		t.Fatalf("core lines %d, %d and %d do not share a stripe", a, b, miss)
	}
	offA, offB, offMiss := int64(a)*ls, int64(b)*ls, int64(miss)*ls
	oldA, oldB, oldMiss := bytes.Repeat([]byte{0x11}, ls), bytes.Repeat([]byte{0x22}, ls), bytes.Repeat([]byte{0x55}, ls)
	volWrite(t, co, oldA, offA, false)
	volWrite(t, co, oldB, offB, false)
	devWrite(t, env.CoreDevs[0], oldMiss, offMiss)
	wlog.take()

	first := bytes.Repeat([]byte{0x33}, ls)
	second := bytes.Repeat([]byte{0x44}, ls/2)
	armed.Store(true)
	w1 := make(chan error, 1)
	go func() { w1 <- co.WriteAt(first, offA, false) }()
	if !gate.WaitHeld(1, 10*time.Second) {
		t.Fatal("the write never reached the core")
	}

	within(t, "a hit on the line being written", readWant(co, offA, oldA))
	within(t, "a non-waiting hit on the line being written", func() error {
		p := make([]byte, ls)
		served, err := co.TryReadAt(p, offA)
		switch {
		case err != nil:
			return err
		case !served:
			return fmt.Errorf("not served")
		case !bytes.Equal(p, oldA):
			return fmt.Errorf("%s", diffAt(p, oldA))
		}
		return nil
	})
	within(t, "a hit on another line of the stripe", readWant(co, offB, oldB))
	within(t, "a miss on another line of the stripe", readWant(co, offMiss, oldMiss))

	w2 := make(chan error, 1)
	go func() { w2 <- co.WriteAt(second, offA+1024, false) }()
	time.Sleep(50 * time.Millisecond) // give a wrong order time to show
	select {
	case err := <-w2:
		t.Fatalf("an overlapping write returned (%v) while the first was held at the core", err)
	default:
	}
	within(t, "a hit while a second write waits", readWant(co, offA, oldA))
	if l := wlog.take(); !slices.Equal(l, []string{"start 0x33"}) {
		t.Fatalf("core writes while the first is held: %q, want only its start", l)
	}

	if err := bdevtest.ReleaseAndReceive(t, gate, w1, "first write"); err != nil {
		t.Fatalf("first write: %v", err)
	}
	select {
	case err := <-w2:
		if err != nil {
			t.Fatalf("second write: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the second write did not end after the first")
	}
	if l := wlog.take(); !slices.Equal(l, []string{"end 0x33", "start 0x44", "end 0x44"}) {
		t.Errorf("core writes after the release: %q, want the first's end, then the second", l)
	}

	want := slices.Clone(first)
	copy(want[1024:], second)
	expectBytes(t, "core device", devRead(t, env.CoreDevs[0], offA, ls), want)
	for s, st := range co.SectorStates(offA, ls) {
		if !st.Valid || st.Dirty {
			t.Fatalf("sector %d of the line written: %+v, want valid and clean", s, st)
		}
	}
	// The back door: with the core's copy garbled, only the cache's copy
	// can answer.
	devWrite(t, env.CoreDevs[0], bytes.Repeat([]byte{0xee}, ls), offA)
	expectBytes(t, "cache copy", volRead(t, co, offA, ls), want)
}

// TestFillDuringCoreWriteIsOverwritten: a read miss that fills a line from
// the core while a write to it is held at the core fills the data from
// before the write. When the write returns, that copy must be gone (write
// invalidate: wi, and wa on a miss) or overwritten where the write covers
// it and kept elsewhere (a partial write-through into a line it mapped
// empty), so the next read returns the write.
func TestFillDuringCoreWriteIsOverwritten(t *testing.T) {
	const ls = 4096
	for _, tc := range []struct {
		mode      ocf.Mode
		off, n    int64 // the write, within the line
		wantValid bool  // whole line valid after the write
	}{
		{ocf.ModeWI, 0, ls, false},
		{ocf.ModeWA, 0, ls, false},
		{ocf.ModeWA, 1024, 1024, false},
		{ocf.ModeWT, 1024, 1024, true},
	} {
		t.Run(fmt.Sprintf("%s/%d+%d", tc.mode, tc.off, tc.n), func(t *testing.T) {
			env, gate, armed, _ := heldCore(t, tc.mode)
			co := env.Cores[0]
			off := int64(5) * ls
			old := bytes.Repeat([]byte{0x11}, ls)
			devWrite(t, env.CoreDevs[0], old, off)
			data := bytes.Repeat([]byte{0x33}, int(tc.n))

			armed.Store(true)
			w := make(chan error, 1)
			go func() { w <- co.WriteAt(data, off+tc.off, false) }()
			if !gate.WaitHeld(1, 10*time.Second) {
				t.Fatal("the write never reached the core")
			}
			within(t, "a miss filling the line", readWant(co, off, old))
			for s, st := range co.SectorStates(off, ls) {
				if !st.Valid {
					t.Fatalf("sector %d not filled by the miss: the test does not test", s)
				}
			}
			if err := bdevtest.ReleaseAndReceive(t, gate, w, "write"); err != nil {
				t.Fatalf("write: %v", err)
			}

			want := slices.Clone(old)
			copy(want[tc.off:], data)
			expectBytes(t, "core device", devRead(t, env.CoreDevs[0], off, ls), want)
			for s, st := range co.SectorStates(off, ls) {
				covered := int64(s)*512 >= tc.off && int64(s)*512 < tc.off+tc.n
				if wantValid := tc.wantValid || !covered; st.Valid != wantValid || st.Dirty {
					t.Errorf("sector %d after the write: %+v, want valid %v, clean", s, st, wantValid)
				}
			}
			expectBytes(t, "read after the write", volRead(t, co, off, ls), want)
		})
	}
}

// TestStripeLockFitsCacheLine: the order lock fits the stripe lock's
// 64-byte padding.
func TestStripeLockFitsCacheLine(t *testing.T) {
	if n := ocf.StripeLockSize; n != 64 {
		t.Fatalf("stripe lock is %d bytes, want 64", n)
	}
}

// failingCore fails its next write after armed, once the test lets it go
// on, and writes nothing.
type failingCore struct {
	bdev.Device
	armed            atomic.Bool
	entered, release chan struct{}
}

var errInjected = errors.New("injected core write failure")

func (d *failingCore) WriteAt(p []byte, off int64, fua bool) error {
	if d.armed.CompareAndSwap(true, false) {
		close(d.entered)
		<-d.release
		return errInjected
	}
	return d.Device.WriteAt(p, off, fua)
}

// TestFailedCoreWriteDropsFillsMadeMeanwhile: when a write's core write
// fails, the core's copy of the range is unknown, so the clean copies in
// the cache go, those a read miss filled while the write waited included.
func TestFailedCoreWriteDropsFillsMadeMeanwhile(t *testing.T) {
	const ls = 4096
	for _, mode := range []ocf.Mode{ocf.ModeWT, ocf.ModeWI} {
		t.Run(mode.String(), func(t *testing.T) {
			var core *failingCore
			env := ocftest.New(t, ocftest.Options{Lines: 16, Mode: mode, SeqCutoff: ocf.CutoffNever{},
				WrapCore: func(_ int, d bdev.Device) bdev.Device {
					core = &failingCore{Device: d, entered: make(chan struct{}), release: make(chan struct{})}
					return core
				}})
			co := env.Cores[0]
			off := int64(7) * ls
			old := bytes.Repeat([]byte{0x11}, ls)
			devWrite(t, env.CoreDevs[0], old, off)

			core.armed.Store(true)
			w := make(chan error, 1)
			go func() { w <- co.WriteAt(bytes.Repeat([]byte{0x33}, ls), off, false) }()
			select {
			case <-core.entered:
			case <-time.After(10 * time.Second):
				close(core.release)
				t.Fatal("the write never reached the core")
			}
			within(t, "a miss filling the line", readWant(co, off, old))
			for s, st := range co.SectorStates(off, ls) {
				if !st.Valid {
					t.Fatalf("sector %d not filled by the miss: the test does not test", s)
				}
			}
			close(core.release)
			select {
			case err := <-w:
				if !errors.Is(err, errInjected) {
					t.Fatalf("write: %v, want the injected failure", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the write did not end")
			}
			for s, st := range co.SectorStates(off, ls) {
				if st.Valid || st.Dirty {
					t.Errorf("sector %d after the failed write: %+v, want not cached", s, st)
				}
			}
		})
	}
}
