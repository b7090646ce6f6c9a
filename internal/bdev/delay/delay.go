// Package delay provides SPDK's delay bdev: a device that forwards every IO
// to another one and completes reads and writes late, to emulate a slower
// disk. Each read or write gets the p99 latency with probability 1/100 and
// the average latency otherwise, as SPDK does; the delay is added after the
// inner device completed the IO. Flush, discard and write-zeroes are
// forwarded undelayed, as in SPDK.
//
// A delay is slept on a per-device hrtimer.Timer, precise to microseconds
// where time.Sleep oversleeps by up to a millisecond in an idle process;
// SPDK's delay bdev checks its deadlines from a poller that never sleeps.
//
// Ours, not SPDK's: Config.MaxInflight bounds how many IOs are in the device
// at once, as a real disk's limited parallelism does. An IO holds its slot
// from before it reaches the inner device until its delay has passed; IOs
// beyond the limit wait for a slot in arrival order, before their latency
// starts.
package delay

import (
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"blockcache/internal/bdev"
	"blockcache/internal/hrtimer"
	"blockcache/internal/poller"
)

// ProductName is the product name delay devices report, as SPDK's.
const ProductName = "delay"

// Config configures New.
type Config struct {
	Name string
	UUID uuid.UUID // zero picks a random one
	Latencies
	// Sleep waits for the given time; nil means the device's own
	// hrtimer.Timer (time.Sleep where the kernel refuses a timerfd).
	// time.Sleep itself oversleeps by up to a millisecond when the process
	// is idle (package hrtimer), which a model of a disk's latency cannot
	// afford. Tests pass a fake so that they do not wait.
	Sleep func(time.Duration)
	// Seed chooses which IOs get the p99 latency.
	Seed uint64
	// MaxInflight is the most IOs (of any kind) in the device at once; 0
	// means no limit, as SPDK's delay bdev.
	MaxInflight int
	// Pollers, if not nil, gets the device's own timer's Poll while the
	// device is open, so that a busy goroutine (the NBD reader) ends the
	// delays that are due without waiting for the network poller, as
	// SPDK's delay bdev ends them from a poller. Unused with Sleep.
	Pollers *poller.Set
}

// Device is a delay device. Its Info's Abilities and ReadOnly are the inner
// device's.
// Its Discard and WriteZeroes methods always exist and return an error
// wrapping bdev.ErrNotSupported when the inner device lacks the ability. The
// errinj wrapper follows the same rule.
//
// Closing a Device does not close the inner device, which belongs to whoever
// opened it (SPDK's delay bdev only releases its claim on the base).
type Device struct {
	info  bdev.Info
	inner bdev.Device
	sleep func(time.Duration)
	timer *hrtimer.Timer // behind sleep when Config.Sleep is nil; nil otherwise
	// unpoll removes timer's Poll from Config.Pollers; nil if not added.
	unpoll func()
	seed   uint64
	slots  *queue // every IO that passed CheckIO holds a slot until it returns

	ios     atomic.Uint64          // IOs delayed so far; numbers them for the p99 draw
	latency [numKinds]atomic.Int64 // nanoseconds by LatencyKind; SetLatency writes

	// mu is held shared while a call is inside the inner device, never
	// while sleeping, and exclusively by Close, so no IO reaches the inner
	// device once Close returned. closed is written under mu held
	// exclusively.
	mu     sync.RWMutex
	closed bool
}

// New wraps inner. It fails if cfg.Name is empty, a latency is negative,
// a p99 latency is below its average (as bdev_delay_create does), or
// MaxInflight is negative.
func New(inner bdev.Device, cfg Config) (*Device, error) {
	if cfg.Name == "" {
		return nil, fmt.Errorf("delay device over %q: empty name: %w", inner.Info().Name, bdev.ErrInvalidName)
	}
	if err := cfg.Latencies.validate(); err != nil {
		return nil, fmt.Errorf("delay device %q: %w", cfg.Name, err)
	}
	if cfg.MaxInflight < 0 {
		return nil, fmt.Errorf("delay device %q: max in-flight IOs %d is negative", cfg.Name, cfg.MaxInflight)
	}
	id := cfg.UUID
	if id == uuid.Nil {
		id = uuid.New()
	}
	in := inner.Info()
	d := &Device{
		info: bdev.Info{Name: cfg.Name, UUID: id, ProductName: ProductName, BlockSize: in.BlockSize, NumBlocks: in.NumBlocks,
			Abilities: in.Abilities, ReadOnly: in.ReadOnly},
		inner: inner,
		sleep: cfg.Sleep,
		seed:  cfg.Seed,
		slots: newQueue(cfg.MaxInflight),
	}
	if d.sleep == nil {
		d.sleep = time.Sleep
		if t, err := hrtimer.New(); err == nil {
			d.timer, d.sleep = t, t.Sleep
			if cfg.Pollers != nil {
				d.unpoll = cfg.Pollers.Add(func() bool {
					t.Poll() // ends the delays due itself
					return false
				})
			}
		}
	}
	for k, v := range cfg.Latencies.byKind() {
		d.latency[k].Store(int64(v))
	}
	return d, nil
}

// Info implements bdev.Device.
func (d *Device) Info() bdev.Info { return d.info }

// Inner returns the wrapped device.
func (d *Device) Inner() bdev.Device { return d.inner }

// Latencies returns the current latencies.
func (d *Device) Latencies() Latencies {
	return Latencies{
		AvgRead:  time.Duration(d.latency[AvgRead].Load()),
		P99Read:  time.Duration(d.latency[P99Read].Load()),
		AvgWrite: time.Duration(d.latency[AvgWrite].Load()),
		P99Write: time.Duration(d.latency[P99Write].Load()),
	}
}

// MaxInflight returns the most IOs admitted at once, 0 for no limit.
func (d *Device) MaxInflight() int {
	if d.slots.limit == math.MaxInt {
		return 0
	}
	return d.slots.limit
}

// Inflight returns how many IOs are in the device (in the inner device or
// in their delay) and how many wait for a slot.
func (d *Device) Inflight() (admitted, waiting int) { return d.slots.counts() }

// SetLatency changes one latency at run time; IOs that complete afterwards
// use it. Like SPDK's bdev_delay_update_latency it does not check the value
// against its p99 or average partner, only that it is not negative.
func (d *Device) SetLatency(kind LatencyKind, v time.Duration) error {
	if kind >= numKinds {
		return fmt.Errorf("delay device %q: set latency: unknown kind %v", d.info.Name, kind)
	}
	if v < 0 {
		return fmt.Errorf("delay device %q: set %v latency: %v is negative", d.info.Name, kind, v)
	}
	d.latency[kind].Store(int64(v))
	return nil
}

// The latencies of reads and writes; flush, discard and write-zeroes have
// none.
var (
	readLatency  = &latencyPair{AvgRead, P99Read}
	writeLatency = &latencyPair{AvgWrite, P99Write}
)

// latencyPair is an IO kind's average and p99 latencies.
type latencyPair struct{ avg, p99 LatencyKind }

// ReadAt implements bdev.Device; it returns one read latency after the inner
// read completed.
func (d *Device) ReadAt(p []byte, off int64) error {
	return d.forward("read", off, int64(len(p)), readLatency, func() error { return d.inner.ReadAt(p, off) })
}

// WriteAt implements bdev.Device; it returns one write latency after the
// inner write completed.
func (d *Device) WriteAt(p []byte, off int64, fua bool) error {
	return d.forward("write", off, int64(len(p)), writeLatency, func() error { return d.inner.WriteAt(p, off, fua) })
}

// Flush implements bdev.Device, undelayed.
func (d *Device) Flush() error {
	return d.forward("flush", 0, 0, nil, d.inner.Flush)
}

// Discard implements bdev.Discarder, undelayed.
func (d *Device) Discard(off, length int64) error {
	return d.forward("discard", off, length, nil, func() error { return bdev.Discard(d.inner, off, length) })
}

// WriteZeroes implements bdev.WriteZeroer, undelayed.
func (d *Device) WriteZeroes(off, length int64) error {
	return d.forward("write-zeroes", off, length, nil, func() error { return bdev.WriteZeroes(d.inner, off, length) })
}

// Close implements bdev.Device. It waits for calls inside the inner device
// (not for their delays, which still run their course) and leaves the
// inner device open.
func (d *Device) Close() error {
	d.mu.Lock()
	first := !d.closed
	d.closed = true
	d.mu.Unlock()
	if first && d.unpoll != nil {
		d.unpoll()
	}
	if first && d.timer != nil {
		return d.timer.Close()
	}
	return nil
}

// forward validates an IO against the device, waits for a slot, runs call
// on the inner device unless the device is closed, and then, if lat is not
// nil, waits one of its latencies whether call failed or not (as SPDK
// delays every completion). Rejected IO takes no slot and is not delayed;
// an IO that waited for a slot while the device closed fails undelayed.
func (d *Device) forward(op string, off, length int64, lat *latencyPair, call func() error) error {
	if op != "flush" {
		if err := bdev.CheckIO(&d.info, op, off, length); err != nil {
			return err
		}
	}
	d.slots.acquire()
	defer d.slots.release()
	reached, err := d.call(op, off, length, call)
	if reached && lat != nil {
		d.wait(lat.avg, lat.p99)
	}
	return err
}

// call runs call unless the device is closed, holding mu shared meanwhile;
// reached reports whether it ran.
func (d *Device) call(op string, off, length int64, call func() error) (reached bool, err error) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		return false, &bdev.IOError{Op: op, Dev: d.info.Name, Offset: off, Len: length, Err: bdev.ErrClosed}
	}
	return true, call()
}

// wait sleeps for the average latency, or, with probability 1/100, for the
// p99 one.
func (d *Device) wait(avg, p99 LatencyKind) {
	kind := avg
	if mix64(d.seed+d.ios.Add(1))%100 == 0 {
		kind = p99
	}
	if v := time.Duration(d.latency[kind].Load()); v > 0 {
		d.sleep(v)
	}
}

// mix64 is SplitMix64's finalizer: consecutive inputs give independent,
// uniformly spread outputs, so numbering IOs draws a reproducible random
// sequence without a lock.
func mix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}
