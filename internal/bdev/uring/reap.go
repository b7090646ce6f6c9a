package uring

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// reap is the ring's one consumer of completions: it waits in
// io_uring_enter for at least one, hands each to its slot and releases its
// CQE before waking the submitter, until Close's no-op arrives.
func (r *Ring) reap() {
	defer close(r.reaped)
	for {
		head := *r.cqHead
		if head == loadAcquire(r.cqTail) {
			_, _, errno := unix.Syscall6(unix.SYS_IO_URING_ENTER, uintptr(r.fd), 0, 1, enterGetEvents, 0, 0)
			switch errno {
			case 0, unix.EINTR, unix.EAGAIN, unix.EBUSY:
			default:
				panic(fmt.Errorf("io_uring_enter waiting for completions on ring fd %d: %w", r.fd, errno))
			}
			continue
		}
		c := &r.cqes[head&r.cqMask]
		userData, res := c.userData, c.res
		storeRelease(r.cqHead, head+1)
		switch userData {
		case tagWake:
			return
		case tagCancel:
		default:
			req := &r.reqs[userData]
			req.res.Store(res)
			req.done <- struct{}{}
		}
	}
}
