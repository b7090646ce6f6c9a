package vbdev

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"blockcache/internal/ocf"
)

// flushJob is a background flush of one vbdev's dirty data
// (bdev_ocf_flush_start). cancel and ended are set when it starts; the
// rest is guarded by mu.
type flushJob struct {
	cancel context.CancelFunc
	ended  chan struct{} // closed once the flush has ended and mu's fields say how

	mu           sync.Mutex
	running      bool
	writeThrough bool
	err          error
	done, total  int   // lines
	lineSize     int64 // bytes
	rate         rateMeter
	start, end   time.Time
}

// FlushStatus is what bdev_ocf_flush_status reports.
type FlushStatus struct {
	InProgress bool
	// Err is the result of the last finished flush (nil: success or none);
	// it wraps ocf.ErrFlushCancelled when the flush was cancelled.
	Err error
	// Done and Total count lines written back by the running or last flush,
	// of the lines dirty when it started (until it has counted those, of
	// the lines dirty when it was asked to start).
	Done, Total int
	// RemainingBytes is what the flush has still to write back (of a
	// finished flush: what it left undone), counted in whole lines as the
	// cache's dirty usage is.
	RemainingBytes int64
	// BytesPerSec is the rate of a running flush over the last
	// rateWindow, or the average rate of a finished one.
	BytesPerSec float64
	// WriteThrough tells whether the flush holds (held) the volume's writes
	// write-through.
	WriteThrough bool
}

// FlushStart starts writing a started vbdev's dirty data back to its core
// in the background and returns at once. With writeThrough the volume's
// writes go write-through until the flush ends or is cancelled, so that it
// leaves no dirty data behind however busy the volume is. A flush already
// running is left to finish, as it was started.
func (m *Manager) FlushStart(name string, writeThrough bool) error {
	m.lock()
	defer m.unlock()
	v, err := m.startedLocked(name)
	if err != nil {
		return err
	}
	if job := v.flush; job != nil {
		job.mu.Lock()
		running := job.running
		job.mu.Unlock()
		if running {
			return nil
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	now := time.Now()
	lineSize := v.inst.cache.LineSize()
	// Until the flush counts them itself, the lines dirty now stand in for
	// its total, so that a status asked at once says what is to do.
	dirty := int(v.core.Stats().Usage.Dirty * 4096 / uint64(lineSize))
	job := &flushJob{cancel: cancel, ended: make(chan struct{}), running: true, writeThrough: writeThrough,
		lineSize: lineSize, start: now, total: dirty}
	job.rate.add(now, 0)
	v.flush = job
	cache, core := v.inst.cache, v.core
	log := m.log.With("vbdev", name)
	go func() {
		defer close(job.ended)
		defer cancel()
		prog := newProgressLog(log, "flush")
		err := cache.Flush(ctx, core, ocf.FlushOptions{WriteThrough: writeThrough, Progress: func(done, total int) {
			job.mu.Lock()
			job.done, job.total = done, total
			job.rate.add(time.Now(), int64(done)*job.lineSize)
			job.mu.Unlock()
			prog(int64(done), int64(total))
		}})
		job.mu.Lock()
		job.running, job.err, job.end = false, err, time.Now()
		done := job.done
		job.mu.Unlock()
		switch {
		case err == nil:
			log.Info("flush finished", "lines", done)
		case ctx.Err() != nil:
			log.Info("flush cancelled", "lines", done, "err", err)
		default:
			log.Error("flush failed", "err", err)
		}
	}()
	return nil
}

// FlushCancel cancels a vbdev's running background flush and waits until
// it has stopped (after the batch it is writing back, at most 128 lines),
// or until ctx is done. It reports whether a flush was running; that flush
// then ends with an error wrapping ocf.ErrFlushCancelled, unless it wrote
// back its last line before it saw the cancel.
func (m *Manager) FlushCancel(ctx context.Context, name string) (bool, error) {
	m.lock()
	v := m.findLocked(name)
	var job *flushJob
	if v != nil {
		job = v.flush
	}
	m.unlock()
	if v == nil {
		return false, fmt.Errorf("OCF vbdev %q: %w", name, ErrNoSuchVbdev)
	}
	if job == nil {
		return false, nil
	}
	job.mu.Lock()
	running := job.running
	job.mu.Unlock()
	if !running {
		return false, nil
	}
	job.cancel()
	select {
	case <-job.ended:
		return true, nil
	case <-ctx.Done():
		return true, fmt.Errorf("OCF vbdev %q: cancelled flush still writing back its last batch: %w", name, ctx.Err())
	}
}

// cancelFlushLocked cancels v's background flush, if one runs, without
// waiting for it: a delete or shutdown that writes everything back itself
// then waits for it in the cache.
func cancelFlushLocked(v *Vbdev) {
	if v.flush != nil {
		v.flush.cancel()
	}
}

// writeBackLocked writes back the dirty data of started vbdev v for a
// delete or shutdown (op), logging its progress.
func (m *Manager) writeBackLocked(v *Vbdev, op string) error {
	prog := newProgressLog(m.log.With("vbdev", v.params.Name), op+": write-back")
	return v.inst.cache.Flush(context.Background(), v.core, ocf.FlushOptions{Progress: func(done, total int) {
		prog(int64(done), int64(total))
	}})
}

// FlushStatus reports on a vbdev's background flush.
func (m *Manager) FlushStatus(name string) (FlushStatus, error) {
	m.lock()
	defer m.unlock()
	v := m.findLocked(name)
	if v == nil {
		return FlushStatus{}, fmt.Errorf("OCF vbdev %q: %w", name, ErrNoSuchVbdev)
	}
	if v.flush == nil {
		return FlushStatus{}, nil
	}
	return v.flush.status(time.Now()), nil
}

// status is the job's FlushStatus at now.
func (j *flushJob) status(now time.Time) FlushStatus {
	j.mu.Lock()
	defer j.mu.Unlock()
	st := FlushStatus{InProgress: j.running, Err: j.err, Done: j.done, Total: j.total, WriteThrough: j.writeThrough}
	if j.running || j.err != nil {
		st.RemainingBytes = int64(j.total-j.done) * j.lineSize
	}
	if j.running {
		st.BytesPerSec = j.rate.rate(now)
	} else if el := j.end.Sub(j.start).Seconds(); el > 0 {
		st.BytesPerSec = float64(int64(j.done)*j.lineSize) / el
	}
	return st
}

// rateWindow is how far back a running flush's rate looks.
const rateWindow = 5 * time.Second

// rateMeter turns samples of bytes done, taken as they come, into a rate
// over the last rateWindow. It keeps the samples of that window and the
// newest one before it, in time order.
type rateMeter struct {
	samples []rateSample
}

type rateSample struct {
	at    time.Time
	bytes int64
}

// add records that bytes were done at at (not before the last sample).
func (r *rateMeter) add(at time.Time, bytes int64) {
	r.samples = append(r.samples, rateSample{at, bytes})
	cut := at.Add(-rateWindow)
	i := 0
	for i+1 < len(r.samples) && !r.samples[i+1].at.After(cut) {
		i++
	}
	if i > 0 {
		r.samples = append(r.samples[:0], r.samples[i:]...)
	}
}

// rate returns the bytes per second done over the rateWindow before now:
// from the newest sample at or before its start (or the first sample) to
// now, so that a flush that stopped making progress shows a falling rate.
func (r *rateMeter) rate(now time.Time) float64 {
	if len(r.samples) == 0 {
		return 0
	}
	cut := now.Add(-rateWindow)
	base := r.samples[0]
	for _, s := range r.samples[1:] {
		if s.at.After(cut) {
			break
		}
		base = s
	}
	el := now.Sub(base.at).Seconds()
	if el <= 0 {
		return 0
	}
	return float64(r.samples[len(r.samples)-1].bytes-base.bytes) / el
}

// newProgressLog returns a progress callback that logs how far op is, at
// most once a second and only once it has run for a second: short
// operations stay quiet.
func newProgressLog(log *slog.Logger, op string) func(done, total int64) {
	start := time.Now()
	var last time.Time
	return func(done, total int64) {
		now := time.Now()
		if now.Sub(start) < time.Second || now.Sub(last) < time.Second {
			return
		}
		last = now
		pct := 100.0
		if total > 0 {
			pct = 100 * float64(done) / float64(total)
		}
		log.Info(op+" progress", "done", done, "total", total, "percent", fmt.Sprintf("%.1f", pct), "elapsed", now.Sub(start).Round(time.Millisecond))
	}
}
