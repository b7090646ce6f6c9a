package nbd

import (
	"io"
	"net"
	"runtime"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"blockcache/internal/poller"
)

// rawSocket reads and writes a plain TCP or Unix socket with raw system
// calls (syscall.RawSyscall) through the runtime's poller, instead of the
// net.Conn's Read and writev.
//
// Why: a system call made the ordinary way tells the Go scheduler that the
// thread may block (entersyscall), and when every scheduler slot was idle
// just before, as it is each time a connection at queue depth 1 waits for
// its client, the runtime wakes its monitor thread (sysmon) from its deep
// sleep there: a futex wake, a thread scheduled on some CPU, often the
// client's, and a few short sleeps of its own before it sleeps deeply
// again. On a socket in non-blocking mode a read or a writev never blocks
// (the poller waits for readiness instead), so nothing needs the monitor
// then, and a raw system call does not wake it. At queue depth 1 that
// halves the context switches per request (about 2 to 1) and a third of
// the server's CPU per request; measured in bench/README.md ("Session of
// 2026-12-06 evening, NBD"). Handed-off requests in flight do not change
// that (see yield).
//
// The deadlines of the net.Conn apply as they do to its own Read and
// Write: the waits for readiness are the poller's.
type rawSocket struct {
	rc syscall.RawConn

	// The operation in progress, for readFn and writeFn, which are made
	// once so that a call allocates nothing. rp and the results belong to
	// the one reader (the holder of the reading turn), wiov and wn to the
	// one writer (under conn.wmu).
	spin   time.Duration // how long read polls an empty socket before waiting; set by the reader
	rp     []byte
	rn     int
	rerr   syscall.Errno
	readFn func(fd uintptr) bool
	// polled is when the reader last waited in the runtime's network
	// poller (see yield); handedOff counts the handed-off requests in
	// flight on all the server's connections (nil: none), and pollers are
	// the devices' completion checks (Options.Pollers), run between the
	// tries of an empty socket.
	polled    time.Time
	handedOff *atomic.Int32
	pollers   *poller.Set
	wiov      []syscall.Iovec
	wn        int
	werr      syscall.Errno
	writeFn   func(fd uintptr) bool
}

// maxIOV is how many buffers one writev takes (Linux's IOV_MAX).
const maxIOV = 1024

// readSpin is how long a read of an empty socket keeps reading it before it
// waits in the poller, running the devices' completion checks and yielding
// the CPU between tries (see yield). At queue depth 1 the
// client sends its next request some 10-30 us after it received the
// reply; a reader that has gone to sleep by then must be woken, which on
// a virtual machine, when the client runs on another CPU, is an
// interrupt to a halted CPU and doubles the round trip. Polling catches
// the request awake; a client on the same CPU runs during the yields. An
// idle connection costs readSpin of polling once, after its last reply.
// Only the read of a request header polls (see conn.readHeader): a
// payload's rest is on its way, and polling for it took CPU from a client
// still sending it (128 KiB writes at QD8: 60 us of server CPU per IO
// against 52, and fewer IOPS).
const readSpin = 50 * time.Microsecond

// netpollEvery is how often, at least, a reader polling an empty socket
// while handed-off requests are in flight waits in the runtime's network
// poller (see yield), for what no completion check covers: another
// connection's requests, the RPC socket. Each such wait costs the reader a
// sleep until the next event when nothing was ready, and at 50 us the
// slow-core row lost about 10 % of its IOPS to them; the devices' own
// completions have their checks.
const netpollEvery = time.Millisecond

// setSpin sets how long c's raw reads poll an empty socket (see readSpin).
// Only the holder of the reading turn calls it.
func (c *conn) setSpin(d time.Duration) {
	if c.raw != nil {
		c.raw.spin = d
	}
}

// newRawSocket returns the raw access to nc, or nil when nc is not a TCP
// or Unix socket of package net (TLS, or a test's pipe): those keep the
// connection's own methods.
func newRawSocket(nc net.Conn) *rawSocket {
	var sc syscall.Conn
	switch c := nc.(type) {
	case *net.TCPConn:
		sc = c
	case *net.UnixConn:
		sc = c
	default:
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	r := &rawSocket{rc: rc}
	r.readFn = r.read
	r.writeFn = r.writev
	return r
}

// Read reads into p what the socket holds, waiting in the poller until it
// holds something. It returns io.EOF at the end of the stream.
func (r *rawSocket) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	r.rp = p
	err := r.rc.Read(r.readFn)
	r.rp = nil
	switch {
	case err != nil:
		return 0, err
	case r.rerr != 0:
		return 0, r.rerr
	case r.rn == 0:
		return 0, io.EOF
	}
	return r.rn, nil
}

// read is the system call of Read; false asks the poller to wait. An
// empty socket is read again for up to spin before that (see readSpin).
func (r *rawSocket) read(fd uintptr) bool {
	var until time.Time
	for {
		n, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&r.rp[0])), uintptr(len(r.rp)))
		switch e {
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			if r.spin <= 0 {
				return false
			}
			now := time.Now()
			if until.IsZero() {
				until = now.Add(r.spin)
			}
			if now.After(until) || !r.yield(now, r.pollers.Poll()) {
				r.polled = now
				return false // the wait is in the poller
			}
			continue
		}
		r.rn, r.rerr = int(n), e
		return true
	}
}

// yield lets the rest of the process, and of the CPU, run between two
// tries of an empty socket, or reports that the reader is to wait in the
// runtime's network poller instead.
//
// With nothing handed off, the other goroutines go first (Gosched), then
// the CPU's other threads, the client's among them (sched_yield): a client
// on the reader's CPU sends its next request during the yield.
//
// With handed-off requests in flight (on any connection) the thread keeps
// its CPU: the kernel would run the thread it yields to until that blocks
// or its time slice ends, and the handed-off requests, whose goroutines
// need this thread's scheduler slot to complete, would wait as long (with
// sched_yield, misses over a 1 ms core reached the client 1.9 ms late at
// p99, against 1.2). Nor does a Gosched let them complete when their device
// signals through the runtime's network poller (a timerfd, an eventfd, a
// socket): the scheduler looks at the poller only when it finds nothing
// else to run, and the yielding reader is always there to run, so their
// completions would wait until the reader stopped polling. So read runs
// the devices' completion checks between tries (Options.Pollers), and the
// reader waits for its socket in the poller when a check reports
// completions waiting there (netpoll), and in any case every netpollEvery,
// for the devices that have no check. Only the poller wakes it then, so
// the scheduler runs every goroutine ready to run and polls the network
// before the reader runs again: without blocking when something was
// ready, and otherwise until the next event, the client's request
// included.
func (r *rawSocket) yield(now time.Time, netpoll bool) bool {
	busy := r.handedOff != nil && r.handedOff.Load() > 0
	switch {
	case netpoll || busy && now.Sub(r.polled) >= netpollEvery:
		return false
	case busy:
		runtime.Gosched()
	default:
		runtime.Gosched()                                    // the other goroutines first
		syscall.RawSyscall(syscall.SYS_SCHED_YIELD, 0, 0, 0) // and the other threads of this CPU, the client's among them
	}
	return true
}

// writeBuffers writes all of bufs, consuming them, with as few writev
// calls as the socket's buffer allows.
func (r *rawSocket) writeBuffers(bufs *net.Buffers) error {
	for len(*bufs) > 0 {
		iov := r.wiov[:0]
		for _, b := range *bufs {
			if len(iov) == maxIOV {
				break
			}
			if len(b) > 0 {
				v := syscall.Iovec{Base: &b[0]}
				v.SetLen(len(b))
				iov = append(iov, v)
			}
		}
		r.wiov = iov
		if len(iov) == 0 {
			*bufs = (*bufs)[:0]
			return nil
		}
		err := r.rc.Write(r.writeFn)
		clear(iov) // hold no payload buffers
		if err == nil && r.werr != 0 {
			err = r.werr
		}
		if err != nil {
			return err
		}
		if r.wn == 0 {
			return io.ErrShortWrite
		}
		consume(bufs, r.wn)
	}
	return nil
}

// consume drops the first n bytes of bufs.
func consume(bufs *net.Buffers, n int) {
	b := *bufs
	for len(b) > 0 && n >= len(b[0]) {
		n -= len(b[0])
		b[0] = nil
		b = b[1:]
	}
	if len(b) > 0 {
		b[0] = b[0][n:]
	}
	*bufs = b
}

// writev is the system call of writeBuffers; false asks the poller to wait
// until the socket can take more.
func (r *rawSocket) writev(fd uintptr) bool {
	for {
		n, _, e := syscall.RawSyscall(syscall.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&r.wiov[0])), uintptr(len(r.wiov)))
		switch e {
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false
		}
		r.wn, r.werr = int(n), e
		return true
	}
}
