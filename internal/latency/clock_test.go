package latency

import (
	"testing"
	"time"
)

// TestCalibrateRefuses: the counter is used only where the kernel keeps
// time with it, from tight pairs, at a plausible rate.
func TestCalibrateRefuses(t *testing.T) {
	a := pair{tsc: 1000, ns: 100, width: 10}
	good := pair{tsc: 1000 + 3e9, ns: 100 + 1e9, width: 10} // 3 GHz
	if n, ok := calibrate("tsc", a, good); ok != haveTSC || ok && n != (1<<32)/3 {
		t.Errorf("calibrate(tsc, 3 GHz) = %d, %v; want %d, %v", n, ok, (1<<32)/3, haveTSC)
	}
	for _, tc := range []struct {
		name   string
		source string
		b      pair
	}{
		{"another clock source", "kvm-clock", good},
		{"no clock source", "", good},
		{"counter went back", "tsc", pair{tsc: 999, ns: 200}},
		{"clock stood still", "tsc", pair{tsc: 2000, ns: 100}},
		{"wide pair", "tsc", pair{tsc: 1000 + 3e9, ns: 100 + 1e9, width: 1e5}},
		{"20 GHz", "tsc", pair{tsc: 1000 + 20e9, ns: 100 + 1e9}},
		{"50 MHz", "tsc", pair{tsc: 1000 + 50e6, ns: 100 + 1e9}},
	} {
		if n, ok := calibrate(tc.source, a, tc.b); ok {
			t.Errorf("%s: calibrate accepted it: %d", tc.name, n)
		}
	}
}

// TestTSCStampAgreesWithClock: a calibrated counter's stamps follow the
// monotonic clock within a few microseconds over 20 ms.
func TestTSCStampAgreesWithClock(t *testing.T) {
	if !haveTSC {
		if _, ok := calibrate("tsc", pair{}, readPair()); ok {
			t.Fatal("calibrated without a counter")
		}
		return
	}
	a := readPair()
	time.Sleep(20 * time.Millisecond)
	n, ok := calibrate("tsc", a, readPair())
	if !ok {
		t.Fatalf("calibration over 20 ms refused (pair widths %d ticks)", a.width)
	}
	for range 4 {
		time.Sleep(5 * time.Millisecond)
		p := readPair()
		got := tscStamp(p.tsc, n) - tscStamp(a.tsc, n) + Stamp(a.ns)
		if d := got - Stamp(p.ns); d < -20000 || d > 20000 {
			t.Fatalf("counter stamp %d, clock %d: %v apart", got, p.ns, time.Duration(d))
		}
	}
}

// TestNowAcrossCalibration: Now follows the monotonic clock before and
// after the calibration, and calibrates where the kernel keeps time with
// the counter.
func TestNowAcrossCalibration(t *testing.T) {
	s0 := Now()
	if d := time.Since(origin) - time.Duration(s0); d < 0 || d > time.Millisecond {
		t.Fatalf("Now %d, clock %v", s0, time.Since(origin))
	}
	if wait := calibrateAfter - time.Since(origin); wait > 0 {
		time.Sleep(wait)
	}
	prev := Now() // calibrates
	if want := haveTSC && clockSource() == "tsc"; clock.ready.Load() != want {
		t.Fatalf("calibrated %v, want %v (clock source %q)", clock.ready.Load(), want, clockSource())
	}
	for range 1000 {
		now := Now()
		if now < prev-100 {
			t.Fatalf("Now went back from %d to %d", prev, now)
		}
		prev = now
	}
	time.Sleep(2 * time.Millisecond)
	before := time.Since(origin)
	now := Now()
	after := time.Since(origin)
	if time.Duration(now) < before-10*time.Microsecond || time.Duration(now) > after+10*time.Microsecond {
		t.Fatalf("Now %v outside the clock's %v..%v", time.Duration(now), before, after)
	}
	if s := now.Sub(s0); s < 2*time.Millisecond {
		t.Fatalf("Sub: %v since the first stamp", s)
	}
	if now.Add(time.Second).Sub(now) != time.Second {
		t.Fatal("Add and Sub disagree")
	}
}

// BenchmarkNow measures Now once calibrated.
func BenchmarkNow(b *testing.B) {
	time.Sleep(calibrateAfter - time.Since(origin))
	Now()
	var s Stamp
	for b.Loop() {
		s += Now()
	}
	if s == 0 {
		b.Fatal("no stamps")
	}
}

// TestTSCStampBeforeBase: a counter reading below base (the counter reset
// by a suspend, or moved back by a hypervisor) gives a stamp before
// base's, at the calibrated rate, not one centuries away.
func TestTSCStampBeforeBase(t *testing.T) {
	const third = (1 << 32) / 3 // 3 GHz
	for _, tc := range []struct {
		name  string
		ticks uint64 // below base
		n     uint64
		want  Stamp
	}{
		{"3000 ticks at 3 GHz", 3000, third, -999}, // 3000·(2^32/3 rounded down)/2^32, truncated
		{"3000 ticks at 2 GHz", 3000, 1 << 31, -1500},
		{"1 tick at 1 GHz", 1, 1 << 32, -1},
		{"a second at 3 GHz", 3e9, third, -Stamp(time.Second) + 1},
	} {
		got := tscStamp(base.tsc-tc.ticks, tc.n) - Stamp(base.ns)
		if d := got - tc.want; d < -1 || d > 1 {
			t.Errorf("%s: stamp %v from base, want %v", tc.name, time.Duration(got), time.Duration(tc.want))
		}
	}
	if got := tscStamp(base.tsc+3000, 1<<31) - Stamp(base.ns); got != 1500 {
		t.Errorf("3000 ticks after base at 2 GHz: %d ns, want 1500", got)
	}
}
