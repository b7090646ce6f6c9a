package ocf_test

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"blockcache/internal/bdev"
	"blockcache/internal/bdev/bdevtest"
	"blockcache/internal/ocf"
	"blockcache/internal/ocf/ocftest"
)

// coreWrites wraps a core device: it logs each write that reaches it, by
// its first byte and FUA, and fails every write that arrives once fail is
// set.
type coreWrites struct {
	bdev.Device
	fail atomic.Bool
	logLines
}

func (d *coreWrites) WriteAt(p []byte, off int64, fua bool) error {
	d.add(fmt.Sprintf("%#x fua=%v", p[0], fua))
	if d.fail.Load() {
		return errInjected
	}
	return d.Device.WriteAt(p, off, fua)
}

// absorbEnv builds a one-core cache in mode whose next core write after
// armed is set waits at the gate (logged before it waits).
func absorbEnv(t *testing.T, mode ocf.Mode) (*ocftest.Env, *bdevtest.IOGate, *atomic.Bool, *coreWrites) {
	return gatedCore(t, mode, func(d bdev.Device) *coreWrites { return &coreWrites{Device: d} })
}

// eventually fails t unless cond holds within 10 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// queueBehindHeld starts writes[0] (with its core write held at the gate),
// then each later write of the same range, waiting until it is registered
// and has superseded the one before; it returns their results' channels.
func queueBehindHeld(t *testing.T, co *ocf.Core, gate *bdevtest.IOGate, armed *atomic.Bool, line uint64, off int64, data [][]byte, fua []bool) []chan error {
	t.Helper()
	res := make([]chan error, len(data))
	for i := range data {
		res[i] = make(chan error, 1)
		if i == 0 {
			armed.Store(true)
		}
		go func() { res[i] <- co.WriteAt(data[i], off, fua[i]) }()
		switch {
		case i == 0:
			if !gate.WaitHeld(1, 10*time.Second) {
				t.Fatal("the first write never reached the core")
			}
		default:
			want := uint64(i - 1)
			eventually(t, fmt.Sprintf("write %d waits and superseded %d writes", i+1, want), func() bool {
				return co.WaitingWrites(line) == 1 && co.Cache().AbsorbedWrites() == want
			})
		}
	}
	return res
}

// TestAbsorbedWritesReturnTheLastOnesResult: W1 is held in its core write;
// W2 (FUA), W3 and W4, all of W1's range, queue behind it, each
// superseding the one before. Released, only W1 and W4 reach the core, W4
// with W2's FUA, every caller gets nil, and the core (and in wt the cache)
// holds W4's data.
func TestAbsorbedWritesReturnTheLastOnesResult(t *testing.T) {
	const ls = 4096
	for _, mode := range []ocf.Mode{ocf.ModeWT, ocf.ModeWI} {
		t.Run(mode.String(), func(t *testing.T) {
			env, gate, armed, cw := absorbEnv(t, mode)
			co := env.Cores[0]
			line := uint64(3)
			off := int64(line) * ls
			volWrite(t, co, bytes.Repeat([]byte{0x01}, ls), off, false)
			cw.take()
			before := co.Counters()

			var data [][]byte
			for _, b := range []byte{0x11, 0x22, 0x33, 0x44} {
				data = append(data, bytes.Repeat([]byte{b}, ls))
			}
			res := queueBehindHeld(t, co, gate, armed, line, off, data, []bool{false, true, false, false})
			for i, ch := range res {
				if err := bdevtest.ReleaseAndReceive(t, gate, ch, fmt.Sprintf("write %d", i+1)); err != nil {
					t.Errorf("write %d: %v", i+1, err)
				}
			}
			// Every write is counted, the absorbed ones as the write that
			// absorbed them: wt hits, or wi pass-through.
			after := co.Counters()
			hits, pt := after.WriteHits-before.WriteHits, after.WritePT-before.WritePT
			if want := map[ocf.Mode][2]uint64{ocf.ModeWT: {4, 0}, ocf.ModeWI: {0, 4}}[mode]; hits != want[0] || pt != want[1] {
				t.Errorf("counted %d write hits and %d pass-through writes, want %d and %d", hits, pt, want[0], want[1])
			}
			if l := cw.take(); !slices.Equal(l, []string{"0x11 fua=false", "0x44 fua=true"}) {
				t.Errorf("core writes %q, want W1's, then W4's with W2's FUA", l)
			}
			if n := co.Cache().AbsorbedWrites(); n != 2 {
				t.Errorf("%d writes absorbed, want 2", n)
			}
			if n := co.WaitingWrites(line); n != 0 {
				t.Errorf("%d writes still registered", n)
			}
			expectBytes(t, "core device", devRead(t, env.CoreDevs[0], off, ls), data[3])
			for s, st := range co.SectorStates(off, ls) {
				if st.Valid != (mode == ocf.ModeWT) || st.Dirty {
					t.Fatalf("sector %d: %+v, want valid %v, clean", s, st, mode == ocf.ModeWT)
				}
			}
			// With the core's copy garbled, only the cache can answer.
			if mode == ocf.ModeWT {
				devWrite(t, env.CoreDevs[0], bytes.Repeat([]byte{0xee}, ls), off)
				expectBytes(t, "cache copy", volRead(t, co, off, ls), data[3])
			}
		})
	}
}

// TestAbsorbedWritesShareTheError: as above, with the surviving write's
// core write failing: W2, W3 and W4 all get its error, and the cache holds
// no clean copy of the range (the core's copy is unknown), so reads come
// from the core, which holds W1's data.
func TestAbsorbedWritesShareTheError(t *testing.T) {
	const ls = 4096
	env, gate, armed, cw := absorbEnv(t, ocf.ModeWT)
	co := env.Cores[0]
	line := uint64(5)
	off := int64(line) * ls
	volWrite(t, co, bytes.Repeat([]byte{0x01}, ls), off, false)
	cw.take()

	var data [][]byte
	for _, b := range []byte{0x11, 0x22, 0x33, 0x44} {
		data = append(data, bytes.Repeat([]byte{b}, ls))
	}
	res := queueBehindHeld(t, co, gate, armed, line, off, data, make([]bool, 4))
	cw.fail.Store(true) // W1 is past the check, held at the gate
	for i, ch := range res {
		err := bdevtest.ReleaseAndReceive(t, gate, ch, fmt.Sprintf("write %d", i+1))
		switch {
		case i == 0 && err != nil:
			t.Errorf("write 1: %v", err)
		case i > 0 && !errors.Is(err, errInjected):
			t.Errorf("write %d: %v, want the injected failure", i+1, err)
		}
	}
	if l := cw.take(); len(l) != 2 {
		t.Errorf("core writes %q, want W1's and W4's", l)
	}
	cw.fail.Store(false)
	for s, st := range co.SectorStates(off, ls) {
		if st.Valid || st.Dirty {
			t.Fatalf("sector %d after the failed write: %+v, want not cached", s, st)
		}
	}
	expectBytes(t, "read after the failed write", volRead(t, co, off, ls), data[0])
}

// TestAbsorbOnlyTheSameRange: writes overlapping a waiting write, but not
// of exactly its range, are not absorbed: every one reaches the core.
func TestAbsorbOnlyTheSameRange(t *testing.T) {
	const ls = 4096
	env, gate, armed, cw := absorbEnv(t, ocf.ModeWT)
	co := env.Cores[0]
	line := uint64(6)
	off := int64(line) * ls

	armed.Store(true)
	w1 := make(chan error, 1)
	go func() { w1 <- co.WriteAt(bytes.Repeat([]byte{0x11}, ls), off, false) }()
	if !gate.WaitHeld(1, 10*time.Second) {
		t.Fatal("the first write never reached the core")
	}
	others := []struct {
		off int64
		n   int
	}{{off, ls}, {off, ls / 2}, {off + 512, ls - 512}, {off + 512, ls / 2}}
	res := make(chan error, len(others))
	for i, o := range others {
		go func() { res <- co.WriteAt(bytes.Repeat([]byte{byte(0x22 + i)}, o.n), o.off, false) }()
		eventually(t, fmt.Sprintf("write %d is registered", i+2), func() bool { return co.WaitingWrites(line) == i+1 })
	}
	if err := bdevtest.ReleaseAndReceive(t, gate, w1, "write 1"); err != nil {
		t.Fatal(err)
	}
	for range others {
		if err := <-res; err != nil {
			t.Error(err)
		}
	}
	if l := cw.take(); len(l) != 1+len(others) {
		t.Errorf("core writes %q, want all %d", l, 1+len(others))
	}
	if n := co.Cache().AbsorbedWrites(); n != 0 {
		t.Errorf("%d writes absorbed, want none", n)
	}
}

// TestWriteBackWritesNeverRegister: writes in wb waiting for a stripe held
// by someone else neither register nor absorb each other; the same writes
// in wt do.
func TestWriteBackWritesNeverRegister(t *testing.T) {
	const ls = 4096
	for _, tc := range []struct {
		mode                    ocf.Mode
		wantWaiting, wantAbsorb int
	}{{ocf.ModeWB, 0, 0}, {ocf.ModeWT, 1, 1}} {
		t.Run(tc.mode.String(), func(t *testing.T) {
			env := ocftest.New(t, ocftest.Options{Lines: 16, Mode: tc.mode, SeqCutoff: ocf.CutoffNever{}})
			co := env.Cores[0]
			line := uint64(2)
			off := int64(line) * ls
			release := co.HoldStripeOrder(line)
			res := make(chan error, 2)
			for i := range 2 {
				go func() { res <- co.WriteAt(bytes.Repeat([]byte{byte(0x11 * (i + 1))}, ls), off, false) }()
			}
			time.Sleep(50 * time.Millisecond) // give both time to queue
			waiting, absorbed := co.WaitingWrites(line), co.Cache().AbsorbedWrites()
			release()
			for range 2 {
				if err := <-res; err != nil {
					t.Error(err)
				}
			}
			if waiting != tc.wantWaiting || absorbed != uint64(tc.wantAbsorb) {
				t.Errorf("while queued: %d registered, %d absorbed; want %d, %d", waiting, absorbed, tc.wantWaiting, tc.wantAbsorb)
			}
		})
	}
}
