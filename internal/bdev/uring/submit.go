package uring

import (
	"fmt"
	"runtime"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// maxTransfer bounds one read or write; a longer one is transferred short,
// as the kernel itself bounds read(2), and callers resume.
const maxTransfer = 1 << 30

// Pread reads into p from fd at off, as pread(2): it returns the bytes
// read, which may be fewer than len(p) (0 at end of file), or the errno.
func (r *Ring) Pread(fd int, p []byte, off int64) (int, error) {
	e := sqe{opcode: opRead, fd: int32(fd), off: uint64(off), len: uint32(min(len(p), maxTransfer))}
	return r.transfer(&e, p)
}

// Pwrite writes p to fd at off, as pwritev2(2) with flags (RWF_DSYNC makes
// the data durable before it completes): it returns the bytes written or
// the errno.
func (r *Ring) Pwrite(fd int, p []byte, off int64, flags int) (int, error) {
	e := sqe{opcode: opWrite, fd: int32(fd), off: uint64(off), len: uint32(min(len(p), maxTransfer)), opFlags: uint32(flags)}
	return r.transfer(&e, p)
}

// Fsync makes fd's written data durable, as fdatasync(2) with datasync,
// else fsync(2).
func (r *Ring) Fsync(fd int, datasync bool) error {
	e := sqe{opcode: opFsync, fd: int32(fd)}
	if datasync {
		e.opFlags = fsyncDatasync
	}
	_, err := r.do(&e, nil)
	return err
}

// Fallocate is fallocate(2) on fd.
func (r *Ring) Fallocate(fd int, mode uint32, off, length int64) error {
	e := sqe{opcode: opFallocate, fd: int32(fd), off: uint64(off), addr: uint64(length), len: mode}
	_, err := r.do(&e, nil)
	return err
}

func (r *Ring) transfer(e *sqe, p []byte) (int, error) {
	buf := unsafe.Pointer(unsafe.SliceData(p))
	e.addr = uint64(uintptr(buf))
	return r.do(e, buf)
}

// do runs one operation: it takes a slot (waiting while the ring is
// full), publishes e with the slot's index as its user data, sees it
// submitted (flush), delivers what has already completed (tryDeliver), and
// waits for its own result.
func (r *Ring) do(e *sqe, buf unsafe.Pointer) (int, error) {
	i, err := r.acquire()
	if err != nil {
		return 0, err
	}
	req := &r.reqs[i]
	req.buf = buf
	e.userData = uint64(i)
	r.mu.Lock()
	if r.mu.closed {
		r.mu.Unlock()
		req.buf = nil
		r.free <- i
		return 0, ErrClosed
	}
	r.pushLocked(e)
	r.mu.Unlock()
	r.flush()
	r.tryDeliver()
	<-req.done
	res := req.res.Load()
	req.buf = nil
	r.free <- i
	if res < 0 {
		return 0, unix.Errno(-res)
	}
	return int(res), nil
}

// acquire takes a free slot, waiting for one while all are in flight,
// unless the ring is closing.
func (r *Ring) acquire() (uint32, error) {
	select {
	case i := <-r.free:
		return i, nil
	default:
	}
	select {
	case i := <-r.free:
		return i, nil
	case <-r.closing:
		return 0, ErrClosed
	}
}

// pushLocked writes e at the submission tail and publishes it. r.mu is
// held. The ring has room: entries waiting for io_uring_enter are at most
// the slots in flight plus Close's two.
func (r *Ring) pushLocked(e *sqe) {
	tail := *r.sqTail
	r.sqes[tail&r.sqMask] = *e
	storeRelease(r.sqTail, tail+1)
}

// maxBatch is the most entries a submission waits to gather: a goroutine
// that publishes the maxBatch-th entry waiting submits them all at once,
// without waiting for the yielding one (flush). Gathering every entry of a
// round of completions instead (up to the queue depth) left the device
// idle while the CPU handled the whole round, and the queue moved in
// lockstep: 32 submitted at once, 32 completed at once. Eight keeps the
// device fed at a call per eight operations; one per operation costs a
// device notification (on a VM, an exit to the hypervisor) each.
const maxBatch = 8

// flush sees every published entry submitted. With maxBatch or more
// entries waiting the caller submits them at once. Otherwise it becomes
// the submitting goroutine unless one already is (r.entering), which then
// submits the caller's entry too. The submitting goroutine yields once
// first, so that goroutines ready to run publish their entries into the
// same io_uring_enter. It clears r.entering only with nothing left
// unsubmitted: an entry published after its last call is seen either by
// its check (the tail moved) or by the publisher's CompareAndSwap (the
// flag is clear), as both are sequentially consistent atomics.
func (r *Ring) flush() {
	if loadAcquire(r.sqTail)-loadAcquire(r.sqHead) >= maxBatch {
		r.enter()
		return
	}
	if !r.entering.CompareAndSwap(false, true) {
		return
	}
	runtime.Gosched()
	for {
		r.enter()
		r.entering.Store(false)
		if loadAcquire(r.sqHead) == loadAcquire(r.sqTail) || !r.entering.CompareAndSwap(false, true) {
			return
		}
	}
}

// enter calls io_uring_enter until the kernel has consumed every entry
// published when it began. Calls are serialized by r.enterMu: the holder
// of r.entering and a goroutine with a full batch may both call it. The
// call never waits for IO: without
// IORING_ENTER_GETEVENTS it only submits, and the kernel hands whatever
// would block to its own workers. So it is a raw system call, which keeps
// the goroutine's P: with GOMAXPROCS=1 the runtime would otherwise hand
// the P to another thread when sysmon saw a submission of many entries
// take over 20 us, and this thread would wait to get it back.
func (r *Ring) enter() {
	r.enterMu.Lock()
	defer r.enterMu.Unlock()
	end := loadAcquire(r.sqTail)
	for backoff := time.Microsecond; ; {
		head := loadAcquire(r.sqHead)
		if int32(end-head) <= 0 {
			return
		}
		r.enters.Add(1)
		_, _, errno := unix.RawSyscall6(unix.SYS_IO_URING_ENTER, uintptr(r.fd), uintptr(end-head), 0, 0, 0, 0)
		switch errno {
		case 0, unix.EINTR:
		case unix.EAGAIN, unix.EBUSY, unix.ENOMEM:
			// Short of kernel memory: the entries stay published
			// and are retried; they cannot be withdrawn, since their
			// submitters are waiting for their completions.
			time.Sleep(backoff)
			backoff = min(2*backoff, time.Millisecond)
		default:
			// EBADF, EFAULT, EINVAL: the ring itself is broken. An
			// entry may still be executed, into a caller's buffer, so
			// no caller can be released with an error.
			panic(fmt.Errorf("io_uring_enter submitting on ring fd %d: %w", r.fd, errno))
		}
	}
}
