// Package perf is an in-process load generator for block devices, the
// engine of `blockcache perf`: bdevperf's workloads (workload.go), queue
// depths and report (report.go), run against any bdev.Device through the
// same interface the NBD server uses. It knows nothing of configs or
// registries: devices in, results out.
//
// A job is one stream of IO against one device, with QueueDepth IOs in
// flight: one goroutine per queue slot, each issuing its next IO as soon
// as the previous one returns, from buffers allocated before the run
// (aligned for O_DIRECT), so the steady state allocates nothing per IO.
// Latency is measured on the monotonic clock, from the moment a slot
// starts preparing an IO (offset, data) to its return, into a fixed-bucket
// histogram per slot (histogram.go), merged when the run is over.
package perf

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"blockcache/internal/bdev"
	"blockcache/internal/latency"
)

// Job describes one stream of IO.
type Job struct {
	// Name labels the job in the report; usually the device's name.
	Name string
	// Dev is the device IO is issued to.
	Dev bdev.Device
	// Workload is the IO pattern.
	Workload Workload
	// QueueDepth is how many IOs are in flight at once (1..MaxQueueDepth).
	// Verify lowers it to the number of IO-sized units in the range, as
	// bdevperf does, so that no two IOs in flight overlap.
	QueueDepth int
	// IOSize is the bytes of each IO: a multiple of the device's block
	// size, at most MaxIOSize.
	IOSize int64
	// ReadPercent is the share of reads (0..100) of RW and RandRW; the
	// other workloads ignore it.
	ReadPercent int
	// Offset and Length bound the byte range the job covers; Length 0
	// means to the end of the device. Both are multiples of IOSize' block
	// size; the range holds at least one IO.
	Offset, Length int64
	// Core is the CPU the job is reported on (bdevperf's Core Mask).
	Core int
	// ContinueOnFailure keeps the job running after a failed IO or a
	// miscompare; by default the job stops at the first, as bdevperf's
	// without -f.
	ContinueOnFailure bool
	// Seed seeds the job's random offsets and read/write mix; 0 takes a
	// seed derived from the job's position.
	Seed uint64
}

// Run runs jobs together for d, all starting at the same moment, and
// returns a result per job in order. It fails, before any IO, if a job is
// invalid (an error wrapping ErrInvalidOption or ErrNotSupported). A job
// whose IO fails ends early unless it continues on failure; its result
// says so. Cancelling ctx stops every job after the IOs in flight; the
// results are then marked terminated.
func Run(ctx context.Context, jobs []Job, d time.Duration) ([]*Result, error) {
	if d <= 0 {
		return nil, fmt.Errorf("run time %v: must be positive: %w", d, ErrInvalidOption)
	}
	if len(jobs) == 0 {
		return nil, fmt.Errorf("no jobs: %w", ErrInvalidOption)
	}
	states := make([]*jobState, len(jobs))
	for i := range jobs {
		js, err := newJobState(jobs[i], i)
		if err != nil {
			return nil, err
		}
		states[i] = js
	}

	start := make(chan struct{})
	var clock struct {
		start, deadline latency.Stamp
	}
	var wg sync.WaitGroup
	for _, js := range states {
		for _, s := range js.slots {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				s.run(clock.start, clock.deadline)
			}()
		}
	}
	done := make(chan struct{})
	var terminated bool
	var watch sync.WaitGroup
	watch.Add(1)
	go func() {
		defer watch.Done()
		select {
		case <-ctx.Done():
			terminated = true
			for _, js := range states {
				js.stop.Store(true)
			}
		case <-done:
		}
	}()
	clock.start = latency.Now()
	clock.deadline = clock.start.Add(d)
	close(start)
	wg.Wait()
	close(done)
	watch.Wait()

	results := make([]*Result, len(states))
	for i, js := range states {
		results[i] = js.result(clock.start, terminated)
	}
	return results, nil
}

// Check reports the first invalid job, as Run would, without running
// anything: an error wrapping ErrInvalidOption or ErrNotSupported.
func Check(jobs []Job) error {
	for i, j := range jobs {
		if _, err := checkJob(j, i); err != nil {
			return err
		}
	}
	return nil
}

// checkJob validates j, the index-th job, and returns the length of its
// range in bytes.
func checkJob(j Job, index int) (length int64, err error) {
	if j.Dev == nil {
		return 0, fmt.Errorf("job %d (%s): no device: %w", index, j.Name, ErrInvalidOption)
	}
	info := j.Dev.Info()
	where := fmt.Sprintf("job %s", j.Name)
	if j.Name == "" {
		where = fmt.Sprintf("job %d (%s)", index, info.Name)
	}
	bs := int64(info.BlockSize)
	switch {
	case int(j.Workload) >= len(workloadNames):
		return 0, fmt.Errorf("%s: %v: %w", where, j.Workload, ErrInvalidOption)
	case j.QueueDepth < 1 || j.QueueDepth > MaxQueueDepth:
		return 0, fmt.Errorf("%s: queue depth %d: want 1..%d: %w", where, j.QueueDepth, MaxQueueDepth, ErrInvalidOption)
	case j.IOSize <= 0 || j.IOSize > MaxIOSize:
		return 0, fmt.Errorf("%s: IO size %d: want 1..%d bytes: %w", where, j.IOSize, MaxIOSize, ErrInvalidOption)
	case bs == 0 || j.IOSize%bs != 0:
		return 0, fmt.Errorf("%s: IO size %d is not a multiple of %s's block size %d: %w", where, j.IOSize, info.Name, bs, ErrInvalidOption)
	case j.Workload.Mixed() && (j.ReadPercent < 0 || j.ReadPercent > 100):
		return 0, fmt.Errorf("%s: read percentage %d: want 0..100: %w", where, j.ReadPercent, ErrInvalidOption)
	case j.Offset < 0 || j.Length < 0 || j.Offset%bs != 0 || j.Length%bs != 0:
		return 0, fmt.Errorf("%s: range offset %d length %d: want block-aligned, non-negative: %w", where, j.Offset, j.Length, ErrInvalidOption)
	case j.Workload == Unmap && !info.Abilities.Discard:
		return 0, fmt.Errorf("%s: %s cannot unmap: %w", where, info.Name, ErrNotSupported)
	}
	length = j.Length
	if length == 0 {
		length = info.SizeBytes() - j.Offset
	}
	if j.Offset+length > info.SizeBytes() || length < j.IOSize {
		return 0, fmt.Errorf("%s: range offset %d length %d holds no %d-byte IO inside %s (%d bytes): %w",
			where, j.Offset, length, j.IOSize, info.Name, info.SizeBytes(), ErrInvalidOption)
	}
	return length, nil
}

// newJobState checks j and prepares its slots and buffers.
func newJobState(j Job, index int) (*jobState, error) {
	length, err := checkJob(j, index)
	if err != nil {
		return nil, err
	}
	js := &jobState{
		Job:     j,
		ios:     uint64(length / j.IOSize),
		readPct: uint64(j.Workload.readPercent(j.ReadPercent)),
	}
	if j.Workload == Verify {
		js.QueueDepth = int(min(uint64(j.QueueDepth), js.ios))
	}
	if js.Seed == 0 {
		js.Seed = uint64(index+1) * 0x9e3779b97f4a7c15
	}
	a := j.Dev.Info().Abilities
	if d, ok := j.Dev.(bdev.Discarder); ok && a.Discard {
		js.discard = d
	}
	if z, ok := j.Dev.(bdev.WriteZeroer); ok && a.WriteZeroes {
		js.zeroer = z
	}
	js.slots = newSlots(js)
	return js, nil
}

// jobState is a job while it runs. The Job fields, ios, readPct, discard,
// zeroer and slots are set before the run and immutable during it; stop and mu are shared by its slots.
type jobState struct {
	Job
	ios     uint64 // IO-sized units in the range
	readPct uint64
	discard bdev.Discarder
	zeroer  bdev.WriteZeroer // nil: write_zeroes writes a zeroed buffer
	slots   []*slot

	stop atomic.Bool
	mu   struct {
		sync.Mutex
		firstErr error
	}
}

// fail records a failed IO and stops the job unless it continues on
// failure.
func (js *jobState) fail(err error) {
	js.mu.Lock()
	if js.mu.firstErr == nil {
		js.mu.firstErr = err
	}
	js.mu.Unlock()
	if !js.ContinueOnFailure {
		js.stop.Store(true)
	}
}

// result sums the slots' counts once every slot has returned.
func (js *jobState) result(start latency.Stamp, terminated bool) *Result {
	r := &Result{
		Job:               js.Name,
		Core:              js.Core,
		Workload:          js.Workload,
		ReadPercent:       js.ReadPercent,
		QueueDepth:        js.QueueDepth,
		IOSize:            js.IOSize,
		Terminated:        terminated,
		ContinueOnFailure: js.ContinueOnFailure,
		Latency:           new(Histogram),
	}
	if js.Workload == Verify {
		r.VerifyStart = uint64(js.Offset / js.IOSize)
		r.VerifyLength = js.ios
	}
	end := start
	for _, s := range js.slots {
		r.Completed += s.completed
		r.Failed += s.failed
		r.Miscompares += s.miscompares
		r.Latency.Merge(&s.hist)
		end = max(end, s.end)
	}
	r.Runtime = end.Sub(start)
	js.mu.Lock()
	r.Err = js.mu.firstErr
	js.mu.Unlock()
	return r
}
