package uring

import (
	"fmt"
	"os"
	"runtime"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// openEventfd creates a non-blocking eventfd, registers it with the ring
// (IORING_REGISTER_EVENTFD: the kernel signals it for every completion it
// posts) and wraps it in an os.File, whose descriptor Go's netpoller
// watches. Waiting for it parks a goroutine, not a thread.
func (r *Ring) openEventfd() (*os.File, error) {
	efd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("eventfd for io_uring completions: %w", err)
	}
	fd32 := int32(efd)
	if _, _, errno := unix.Syscall6(unix.SYS_IO_URING_REGISTER, uintptr(r.fd), registerEventfd, uintptr(unsafe.Pointer(&fd32)), 1, 0, 0); errno != 0 {
		unix.Close(efd)
		return nil, fmt.Errorf("io_uring_register(IORING_REGISTER_EVENTFD) on ring fd %d: %w", r.fd, errno)
	}
	return os.NewFile(uintptr(efd), "io_uring eventfd"), nil
}

// reap is the ring's completion goroutine: it waits for the eventfd in
// the netpoller while the completion ring is empty (after polling it for
// the poll budget while operations are in flight), and delivers what has
// arrived, until Close's no-op does.
//
// The eventfd's counter is never read. The netpoller watches it
// edge-triggered and every signal is an edge, whatever the counter, so a
// read (a system call per wake-up) would only reset a number nobody uses.
// A wake-up is never lost: RawRead clears the descriptor's readiness
// before calling the check, the kernel publishes a CQE before signalling,
// so a completion either is seen by the check or signals after it.
func (r *Ring) reap() {
	defer close(r.reaped)
	rc, err := r.event.SyscallConn()
	if err != nil {
		panic(fmt.Errorf("io_uring eventfd of ring fd %d: %w", r.fd, err))
	}
	arrived := func(uintptr) bool { return loadAcquire(r.cqHead) != loadAcquire(r.cqTail) }
	for {
		r.reapMu.Lock()
		r.deliverLocked()
		stop := r.woken
		r.reapMu.Unlock()
		if stop {
			return
		}
		if r.pollArrived() {
			continue
		}
		r.parks.Add(1)
		// The eventfd is closed only after reap returns, so an error
		// here means the netpoller cannot watch it: nothing would ever
		// wake the ring's callers.
		if err := rc.Read(arrived); err != nil {
			panic(fmt.Errorf("waiting for io_uring completions on the eventfd of ring fd %d: %w", r.fd, err))
		}
	}
}

// pollArrived polls the completion ring, for up to the poll budget, while
// operations are in flight, and reports whether a completion arrived. It
// yields between looks, so goroutines ready to run (submitters, the
// callers of the operations just delivered) run first; when none is, the
// loop spins and keeps the CPU from sleeping. It stops as soon as no
// operation holds a slot: an idle ring parks at once.
//
// A polling ring is set up with COOP_TASKRUN and TASKRUN_FLAG (coop). The
// kernel posts a completion from task work run by the thread that
// submitted the operation; by default it interrupts that thread, when it
// is running, to make it do so, which costs an inter-processor interrupt
// whenever the device's interrupt lands on another CPU (on a VM, an exit to
// the hypervisor on both sides). With coop it only raises sqTaskrun, which
// the loop sees and answers with an io_uring_enter(GETEVENTS) that runs
// the work without waiting. A sleeping submitter is still woken, so a
// parked ring misses nothing; the work of a thread that is running other
// code waits for its next entry into the kernel: a system call, or an
// interrupt such as the scheduler tick.
func (r *Ring) pollArrived() bool {
	if r.poll <= 0 {
		return false
	}
	start := time.Now()
	for {
		if loadAcquire(r.cqHead) != loadAcquire(r.cqTail) {
			return true
		}
		if r.coop && loadAcquire(r.sqFlags)&sqTaskrun != 0 {
			// Runs this thread's pending task work, and returns at
			// once (min_complete 0); errors leave it for later. The
			// work may be another thread's: then the flag stays set
			// and the budget still bounds the loop.
			unix.RawSyscall6(unix.SYS_IO_URING_ENTER, uintptr(r.fd), 0, 0, enterGetevents, 0, 0)
			if loadAcquire(r.cqHead) != loadAcquire(r.cqTail) {
				return true
			}
		}
		if len(r.free) == r.depth || time.Since(start) >= r.poll {
			return false
		}
		runtime.Gosched()
	}
}

// tryDeliver delivers the completions that have arrived, unless another
// goroutine is doing so. An operation that completed by the time its
// submitter's io_uring_enter returned (a read of cached pages, or any
// completion whose task work that call ran) is then delivered by its
// submitter, with no wake-up of the completion goroutine.
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
