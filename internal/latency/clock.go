package latency

import (
	"math/bits"
	"os"
	"strings"
	"sync/atomic"
	"time"
)

// Stamp is a reading of the monotonic clock, in nanoseconds since the
// process started.
//
// On amd64, once the clock is calibrated (below), a reading is one RDTSC
// instruction and a multiplication, about a third of the cost of the
// kernel's clock_gettime, which fences the counter read. The price of
// leaving out the fence is that the CPU may read the counter a little
// before the instructions that precede it have finished, or after some
// that follow it have started: a stamp can be off by the CPU's reorder
// window, tens of nanoseconds, far below the histograms' resolution.
type Stamp int64

// origin is the zero of Stamp, and base a reading of the time-stamp
// counter beside a reading of the monotonic clock taken then. Both are set
// once, at start-up, and never written again.
var (
	origin = time.Now()
	base   = readPair()
)

// calibrateAfter is how long after start-up the counter is calibrated
// against the monotonic clock: from base to a second pair of readings.
// Until then Now reads the monotonic clock.
const calibrateAfter = 50 * time.Millisecond

// maxPairError bounds the calibration's error: the uncertainty of the two
// pairs (half the gap between the counter readings around each clock
// reading) over the ticks between them. 1e-5 is 10 µs in a second.
const maxPairError = 1e-5

// clock is the time-stamp counter's calibration: nsPerTick, nanoseconds
// per counter tick in 32.32 fixed point, is written once, before ready is
// set, and read only after ready is seen set. tried makes the calibration
// run once.
var clock struct {
	ready     atomic.Bool
	tried     atomic.Bool
	nsPerTick uint64
}

// Now returns the current Stamp.
func Now() Stamp {
	if clock.ready.Load() {
		return tscStamp(readTSC(), clock.nsPerTick)
	}
	return slowNow()
}

// tscStamp converts a counter reading to a Stamp. A reading below base's
// (the counter reset by a suspend, or set back by a hypervisor) gives a
// stamp before base's: the unsigned difference would wrap and scale to a
// stamp centuries away.
func tscStamp(tsc, nsPerTick uint64) Stamp {
	if tsc < base.tsc {
		hi, lo := bits.Mul64(base.tsc-tsc, nsPerTick)
		return Stamp(base.ns) - Stamp(hi<<32|lo>>32)
	}
	hi, lo := bits.Mul64(tsc-base.tsc, nsPerTick)
	return Stamp(base.ns + (hi<<32 | lo>>32))
}

// slowNow reads the monotonic clock, and calibrates the counter the first
// time it is called calibrateAfter or more after start-up.
func slowNow() Stamp {
	now := Stamp(time.Since(origin))
	if now >= Stamp(calibrateAfter) && !clock.tried.Swap(true) {
		if n, ok := calibrate(clockSource(), base, readPair()); ok {
			clock.nsPerTick = n
			clock.ready.Store(true)
		}
	}
	return now
}

// clockSource is the kernel's clock source ("tsc", "kvm-clock", "hpet"),
// or "" if it cannot be read.
func clockSource() string {
	b, err := os.ReadFile("/sys/devices/system/clocksource/clocksource0/current_clocksource")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// pair is a counter reading and the monotonic clock's (ns since origin) at
// the same moment, give or take width ticks.
type pair struct {
	tsc, ns, width uint64
}

// readPair reads the clock between two counter readings, a few times, and
// keeps the tightest: a thread preempted in between gives a wide pair.
func readPair() pair {
	best := pair{width: 1<<64 - 1}
	for range 5 {
		t1 := readTSC()
		ns := time.Since(origin)
		t2 := readTSC()
		if t2 >= t1 && t2-t1 < best.width {
			best = pair{tsc: t1 + (t2-t1)/2, ns: uint64(ns), width: t2 - t1}
		}
	}
	return best
}

// calibrate returns the counter's rate between pairs a and b in
// nanoseconds per tick, 32.32 fixed point. It refuses (ok false) unless
// the CPU has a counter and the kernel keeps time with it (source "tsc":
// then the counter runs at a constant rate through sleep states and
// frequency changes and agrees between CPUs, which the kernel checked),
// the pairs are tight enough for maxPairError, and the rate is within 0.1
// to 10 GHz.
func calibrate(source string, a, b pair) (nsPerTick uint64, ok bool) {
	if !haveTSC || source != "tsc" || b.tsc <= a.tsc || b.ns <= a.ns {
		return 0, false
	}
	ticks, ns := b.tsc-a.tsc, b.ns-a.ns
	if float64(a.width/2+b.width/2) > maxPairError*float64(ticks) || ns>>32 >= ticks {
		return 0, false
	}
	nsPerTick, _ = bits.Div64(ns>>32, ns<<32, ticks)
	if nsPerTick < 1<<32/10 || nsPerTick > 10<<32 {
		return 0, false
	}
	return nsPerTick, true
}

// Sub returns the duration from start to s.
func (s Stamp) Sub(start Stamp) time.Duration { return time.Duration(s - start) }

// Add returns the Stamp d after s.
func (s Stamp) Add(d time.Duration) Stamp { return s + Stamp(d) }
