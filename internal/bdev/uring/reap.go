package uring

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// reap is the ring's completion goroutine: it waits in io_uring_enter for
// at least one completion and delivers what has arrived, until Close's
// no-op does. Submitters also deliver, without waiting (tryDeliver), what
// completed while they submitted.
func (r *Ring) reap() {
	defer close(r.reaped)
	for {
		r.reapMu.Lock()
		r.deliverLocked()
		stop := r.woken
		r.reapMu.Unlock()
		if stop {
			return
		}
		if loadAcquire(r.cqHead) != loadAcquire(r.cqTail) {
			continue
		}
		_, _, errno := unix.Syscall6(unix.SYS_IO_URING_ENTER, uintptr(r.fd), 0, 1, enterGetEvents, 0, 0)
		switch errno {
		case 0, unix.EINTR, unix.EAGAIN, unix.EBUSY:
		default:
			panic(fmt.Errorf("io_uring_enter waiting for completions on ring fd %d: %w", r.fd, errno))
		}
	}
}

// tryDeliver delivers the completions that have arrived, unless another
// goroutine is doing so. An operation that the kernel completed within
// io_uring_enter (a read of cached pages) is then delivered by its own
// submitter, with no hand-over to the reaper's thread.
func (r *Ring) tryDeliver() {
	if loadAcquire(r.cqHead) == loadAcquire(r.cqTail) || !r.reapMu.TryLock() {
		return
	}
	r.deliverLocked()
	r.reapMu.Unlock()
}

// deliverLocked hands every completion in the ring to its slot, releasing
// each CQE before waking its submitter. r.reapMu is held.
func (r *Ring) deliverLocked() {
	head := *r.cqHead
	for tail := loadAcquire(r.cqTail); head != tail; head++ {
		c := &r.cqes[head&r.cqMask]
		userData, res := c.userData, c.res
		storeRelease(r.cqHead, head+1)
		switch userData {
		case tagWake:
			r.woken = true
		case tagCancel:
		default:
			req := &r.reqs[userData]
			req.res.Store(res)
			req.done <- struct{}{}
		}
	}
}
