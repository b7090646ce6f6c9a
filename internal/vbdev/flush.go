package vbdev

import (
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// flushJob is a background flush of one vbdev's dirty data
// (bdev_ocf_flush_start). Fields are guarded by mu.
type flushJob struct {
	mu          sync.Mutex
	running     bool
	err         error
	done, total int
}

// FlushStatus is what bdev_ocf_flush_status reports.
type FlushStatus struct {
	InProgress bool
	// Err is the result of the last finished flush (nil: success or none).
	Err error
	// Done and Total count lines written back by the running or last flush.
	Done, Total int
}

// FlushStart starts writing a started vbdev's dirty data back to its core
// in the background and returns at once. A flush already running is left
// to finish.
func (m *Manager) FlushStart(name string) error {
	m.lock()
	defer m.unlock()
	v, err := m.startedLocked(name)
	if err != nil {
		return err
	}
	job := v.flush
	if job == nil {
		job = &flushJob{}
		v.flush = job
	}
	job.mu.Lock()
	defer job.mu.Unlock()
	if job.running {
		return nil
	}
	job.running, job.err, job.done, job.total = true, nil, 0, 0
	cache, core := v.inst.cache, v.core
	log := m.log.With("vbdev", name)
	go func() {
		prog := newProgressLog(log, "flush")
		err := cache.FlushDirty(core, func(done, total int) {
			job.mu.Lock()
			job.done, job.total = done, total
			job.mu.Unlock()
			prog(int64(done), int64(total))
		})
		job.mu.Lock()
		job.running, job.err = false, err
		done := job.done
		job.mu.Unlock()
		if err != nil {
			log.Error("flush failed", "err", err)
		} else {
			log.Info("flush finished", "lines", done)
		}
	}()
	return nil
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
	v.flush.mu.Lock()
	defer v.flush.mu.Unlock()
	return FlushStatus{InProgress: v.flush.running, Err: v.flush.err, Done: v.flush.done, Total: v.flush.total}, nil
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
