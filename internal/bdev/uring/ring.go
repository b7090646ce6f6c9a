// Package uring submits positioned file IO (read, write, fsync,
// fallocate) to the kernel through one io_uring instance, written directly
// against the system calls (io_uring_setup, io_uring_enter,
// io_uring_register) and the shared-memory rings.
//
// A Ring is safe for many goroutines. Its queue depth bounds the
// operations in the kernel at once: a goroutine beyond it waits in Go for
// a slot (parked, holding no thread).
//
// Submission is batched. A goroutine writes its entry into the ring and,
// unless another goroutine is already due to, becomes the one that calls
// io_uring_enter: it first yields the CPU once (runtime.Gosched), so that
// the goroutines ready to run put their entries in too, then submits all
// of them in one call, which never waits for IO. The others go straight to
// waiting for their completion, but the one that finds maxBatch (8)
// entries waiting submits them itself, at once. So on one CPU
// (GOMAXPROCS=1) the operations that a round of completions set going cost
// a system call per eight, not one each, and the device gets the first
// eight while the CPU is still handling the rest of the round.
//
// Completion needs no thread of its own. The kernel signals an eventfd
// registered with the ring (IORING_REGISTER_EVENTFD); the ring's
// completion goroutine waits for it through Go's netpoller (an os.File on
// the non-blocking eventfd), parked like a network reader, and delivers
// what the completion ring holds to the waiting submitters; a submitter
// also delivers what it finds there right after its io_uring_enter. A
// thread blocked in io_uring_enter(IORING_ENTER_GETEVENTS), as before,
// cost a thread switch per completion on one CPU, and the P it held in
// the system call was handed back only by sysmon, tens of microseconds
// later. So the OS threads a Ring holds are only submitters briefly inside
// io_uring_enter. Completion slots are preallocated, so an operation
// allocates nothing.
//
// Polling (Options.Poll) trades a CPU for latency, as SPDK's pollers and
// fio do: while operations are in flight, the completion goroutine checks
// the completion ring in a loop, yielding to every other goroutine ready
// to run, for up to the poll budget after its last delivery before it
// parks. An idle CPU sleeps (on a virtual machine the vCPU halts and exits
// to the hypervisor), and the completion's interrupt then has to wake it:
// measured on the 2-CPU test VM, that wake-up kept 4 KiB O_DIRECT reads at
// QD32 about 20 % below a polling fio's IOPS, and polling closed the gap
// (docs/perf.md). A ring with nothing in flight never polls. While it
// polls with GOMAXPROCS=1, network readiness waits for the poll to end (the
// runtime looks at its netpoller only when nothing else can run), so a
// server with one scheduler slot delays its sockets by up to the budget.
// A polling ring also takes its completions' task work cooperatively
// (pollArrived).
//
// Fixed files (IORING_REGISTER_FILES) and registered buffers are not
// used. BenchmarkRandRead4K measured no steady gain from a registered
// file against the noise of a shared machine, and registered buffers
// would need callers' data copied into them, which costs more than the
// page pinning they save at 4 KiB. The setup flags DEFER_TASKRUN and
// SINGLE_ISSUER are not used: they need every submission made from one
// thread, and Go submits from whichever thread runs the goroutine.
// COOP_TASKRUN, which delays completions until the submitting thread next
// enters the kernel to spare it an interrupt, measured no gain for a ring
// that sleeps (docs/perf.md); a polling ring uses it.
package uring

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"blockcache/internal/poller"
)

// MaxDepth is the largest queue depth New accepts.
const MaxDepth = 4096

// Tags in the user data of the Ring's own entries; an operation's user
// data is its slot index, below MaxDepth.
const (
	tagCancel = 1<<63 | 1 // Close's cancellation of what is in flight
	tagWake   = 1<<63 | 2 // Close's no-op that stops the completion goroutine
)

// Options configures a Ring.
type Options struct {
	// Poll is the completion goroutine's poll budget: with operations in
	// flight it checks the completion ring for up to this long after its
	// last delivery, yielding in between, before it parks in the
	// netpoller. Zero never polls: every wait for a completion parks.
	Poll time.Duration
	// Pollers, if not nil, gets the ring's Arrived while the ring is
	// open, so that a goroutine busy on the one scheduler slot (the NBD
	// reader) lets the completion goroutine run as soon as completions
	// arrive (package poller).
	Pollers *poller.Set
}

// Ring is one io_uring instance with a bounded queue depth.
type Ring struct {
	fd    int
	depth int
	poll  time.Duration // Options.Poll

	// The submission ring. sqTail is written under mu only; the kernel
	// advances sqHead as it consumes entries.
	sqHead, sqTail *uint32
	sqMask         uint32
	sqes           []sqe
	sqFlags        *uint32 // where the kernel raises sqTaskrun (coop)
	// coop: the ring was set up with COOP_TASKRUN and TASKRUN_FLAG, as
	// polling rings are (pollArrived).
	coop bool

	// The completion ring. CQEs are read and cqHead written under reapMu.
	cqHead, cqTail *uint32
	cqMask         uint32
	cqes           []cqe

	ringMem, sqeMem []byte // the two mappings, unmapped by Close

	// reqs are the completion slots, one per operation in flight; an
	// operation's user data is its index. free holds the indices of idle
	// slots: receiving one is the right to submit.
	reqs []request
	free chan uint32

	// reapMu is held to deliver completions: by the completion
	// goroutine, or by a submitter that finds some after submitting
	// (tryDeliver).
	reapMu sync.Mutex
	// woken is set under reapMu when Close's no-op completes.
	woken bool
	// mapMu is held shared by Arrived while it looks at the completion
	// ring, and exclusively by Close to set unmapped before it unmaps
	// the rings: Arrived may be called at any time.
	mapMu    sync.RWMutex
	unmapped bool
	// unpoll removes Arrived from Options.Pollers; nil if not added.
	unpoll func()

	// event is the eventfd the kernel signals for each completion; the
	// completion goroutine (reap) waits for it in the netpoller.
	event *os.File
	// entering is set by the goroutine due to call io_uring_enter for
	// the entries published (flush); others publish theirs and leave.
	entering atomic.Bool
	// enterMu serializes io_uring_enter calls (enter).
	enterMu sync.Mutex
	// enters counts io_uring_enter calls, for tests and benchmarks.
	enters atomic.Uint64
	// parks counts the completion goroutine's waits in the netpoller,
	// for tests and benchmarks.
	parks atomic.Uint64

	closing chan struct{} // closed when Close begins
	reaped  chan struct{} // closed when the completion goroutine returns

	mu struct {
		sync.Mutex
		// closed refuses new submissions; set by Close.
		closed bool
	}
	closeOnce sync.Once
	closeErr  error
}

// request is a completion slot. Between its submission and its completion
// only the kernel and the goroutine delivering completions (under reapMu)
// touch it: that goroutine sets res and then signals done.
type request struct {
	done chan struct{} // capacity 1
	// res is atomic only to show the race detector the hand-over through
	// the kernel: the slot's previous user read it before releasing the
	// slot, the delivering goroutine writes it for the next one.
	res atomic.Int32
	// buf keeps the operation's buffer reachable, and so in place (Go's
	// heap does not move objects), while the kernel may write it. Storing
	// it here makes callers' buffers escape to the heap.
	buf unsafe.Pointer
}

// setupFunc is io_uring_setup; tests substitute a refusing kernel.
type setupFunc func(entries uint32, p *params) (int, error)

func sysSetup(entries uint32, p *params) (int, error) {
	fd, _, errno := unix.Syscall(unix.SYS_IO_URING_SETUP, uintptr(entries), uintptr(unsafe.Pointer(p)), 0)
	if errno != 0 {
		return -1, errno
	}
	return int(fd), nil
}

// New creates a ring with room for depth operations in flight (1 to
// MaxDepth). Where the kernel refuses io_uring, the error wraps
// ErrUnavailable and says why.
func New(depth int, opts Options) (*Ring, error) { return newRing(depth, opts, sysSetup) }

func newRing(depth int, opts Options, setup setupFunc) (*Ring, error) {
	if depth < 1 || depth > MaxDepth {
		return nil, fmt.Errorf("io_uring queue depth %d out of range (allowed 1..%d): %w", depth, MaxDepth, unix.EINVAL)
	}
	if opts.Poll < 0 {
		return nil, fmt.Errorf("io_uring poll budget %v is negative: %w", opts.Poll, unix.EINVAL)
	}
	// Room for every operation's entry plus Close's two, rounded up by the
	// kernel to a power of two; the completion ring is twice as large, so
	// it never overflows.
	var p params
	coop := opts.Poll > 0 // see pollArrived
	if coop {
		p.flags = setupCoopTaskrun | setupTaskrunFlag
	}
	fd, err := setup(uint32(depth+2), &p)
	if coop && errors.Is(err, unix.EINVAL) {
		// Before Linux 5.19, which has neither flag: poll without.
		p, coop = params{}, false
		fd, err = setup(uint32(depth+2), &p)
	}
	if err != nil {
		return nil, setupError(err)
	}
	r := &Ring{fd: fd, depth: depth, poll: opts.Poll, coop: coop, closing: make(chan struct{}), reaped: make(chan struct{})}
	if err := r.mapRings(&p); err != nil {
		r.unmap()
		unix.Close(fd)
		return nil, err
	}
	if r.event, err = r.openEventfd(); err != nil {
		r.unmap()
		unix.Close(fd)
		return nil, err
	}
	r.reqs = make([]request, depth)
	r.free = make(chan uint32, depth)
	for i := range r.reqs {
		r.reqs[i].done = make(chan struct{}, 1)
		r.free <- uint32(i)
	}
	go r.reap()
	if opts.Pollers != nil {
		r.unpoll = opts.Pollers.Add(r.Arrived)
	}
	return r, nil
}

// setupError explains a failed io_uring_setup.
func setupError(err error) error {
	var errno unix.Errno
	if !errors.As(err, &errno) || (errno != unix.ENOSYS && errno != unix.EPERM && errno != unix.EACCES) {
		return fmt.Errorf("io_uring_setup: %w", err)
	}
	why := "the kernel refused it"
	switch {
	case errno == unix.ENOSYS:
		why = "the kernel is built without io_uring"
	default:
		if b, rerr := os.ReadFile("/proc/sys/kernel/io_uring_disabled"); rerr == nil && strings.TrimSpace(string(b)) != "0" {
			why = "disabled by the sysctl kernel.io_uring_disabled = " + strings.TrimSpace(string(b))
		} else {
			why = "refused by a seccomp or container policy"
		}
	}
	return fmt.Errorf("io_uring_setup: %v: %s: %w", errno, why, ErrUnavailable)
}

// mapRings maps the rings and the SQE array that setup described.
func (r *Ring) mapRings(p *params) error {
	if p.features&featSingleMmap == 0 {
		return fmt.Errorf("io_uring without IORING_FEAT_SINGLE_MMAP (Linux before 5.4): %w", ErrUnavailable)
	}
	// The ring uses IORING_OP_READ, WRITE and FALLOCATE, which came in 5.6
	// with this feature bit: an older kernel would accept the ring and
	// then fail every IO with EINVAL.
	if p.features&featRWCurPos == 0 {
		return fmt.Errorf("io_uring without IORING_FEAT_RW_CUR_POS (Linux before 5.6, no READ/WRITE opcodes): %w", ErrUnavailable)
	}
	sqSize := uintptr(p.sqOff.array) + uintptr(p.sqEntries)*4
	cqSize := uintptr(p.cqOff.cqes) + uintptr(p.cqEntries)*unsafe.Sizeof(cqe{})
	mem, err := unix.Mmap(r.fd, offSQRing, int(max(sqSize, cqSize)), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return fmt.Errorf("mmap io_uring rings: %w", err)
	}
	r.ringMem = mem
	sqeMem, err := unix.Mmap(r.fd, offSQEs, int(uintptr(p.sqEntries)*unsafe.Sizeof(sqe{})), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return fmt.Errorf("mmap io_uring submission entries: %w", err)
	}
	r.sqeMem = sqeMem
	base := unsafe.Pointer(&mem[0])
	at := func(off uint32) *uint32 { return (*uint32)(unsafe.Add(base, off)) }
	r.sqHead, r.sqTail, r.sqMask, r.sqFlags = at(p.sqOff.head), at(p.sqOff.tail), *at(p.sqOff.ringMask), at(p.sqOff.flags)
	r.cqHead, r.cqTail, r.cqMask = at(p.cqOff.head), at(p.cqOff.tail), *at(p.cqOff.ringMask)
	r.sqes = unsafe.Slice((*sqe)(unsafe.Pointer(&sqeMem[0])), p.sqEntries)
	r.cqes = unsafe.Slice((*cqe)(unsafe.Add(base, p.cqOff.cqes)), p.cqEntries)
	// Entry i of the ring always names SQE i: an entry is written at
	// tail&mask and the array maps that position to itself.
	array := unsafe.Slice(at(p.sqOff.array), p.sqEntries)
	for i := range array {
		array[i] = uint32(i)
	}
	return nil
}

func (r *Ring) unmap() {
	if r.sqeMem != nil {
		unix.Munmap(r.sqeMem)
		r.sqeMem = nil
	}
	if r.ringMem != nil {
		unix.Munmap(r.ringMem)
		r.ringMem = nil
	}
}

// Arrived reports whether completions wait in the completion ring, for the
// completion goroutine (parked in the netpoller, or about to be) or for a
// goroutine delivering them now (package poller). It makes no system call,
// never waits, and is safe at any time, after Close too.
func (r *Ring) Arrived() bool {
	if !r.mapMu.TryRLock() {
		return false // Close is unmapping the rings
	}
	defer r.mapMu.RUnlock()
	return !r.unmapped && loadAcquire(r.cqHead) != loadAcquire(r.cqTail)
}

// Depth returns the ring's queue depth.
func (r *Ring) Depth() int { return r.depth }

// Close stops the ring: operations waiting for a slot and later ones fail
// with ErrClosed; what is in flight is cancelled where the kernel can
// (a read of a pipe), and otherwise (disk IO) completes and is returned
// to its caller. Close returns once nothing is in flight and the ring is
// released. A second Close returns the first's result. Cancelling every
// operation at once (IORING_ASYNC_CANCEL_ALL) needs Linux 5.19: on an older
// kernel an operation that never completes by itself (a pipe with no
// writer; never a disk) keeps Close waiting.
func (r *Ring) Close() error {
	r.closeOnce.Do(func() { r.closeErr = r.close() })
	return r.closeErr
}

func (r *Ring) close() error {
	r.mu.Lock()
	r.mu.closed = true
	r.mu.Unlock()
	close(r.closing)
	r.control(&sqe{opcode: opAsyncCancel, opFlags: asyncCancelAll | asyncCancelAny, userData: tagCancel})
	for range r.depth {
		<-r.free
	}
	r.control(&sqe{opcode: opNop, userData: tagWake})
	<-r.reaped
	if r.unpoll != nil {
		r.unpoll()
	}
	r.mapMu.Lock() // a running Arrived may still be due to look
	r.unmapped = true
	r.mapMu.Unlock()
	r.unmap()
	err := r.event.Close()
	if cerr := unix.Close(r.fd); cerr != nil {
		return fmt.Errorf("close io_uring: %w", cerr)
	}
	if err != nil {
		return fmt.Errorf("close io_uring eventfd: %w", err)
	}
	return nil
}

// control submits one of the Ring's own entries, after Close refused
// others.
func (r *Ring) control(e *sqe) {
	r.mu.Lock()
	r.pushLocked(e)
	r.mu.Unlock()
	r.flush()
}

// loadAcquire and storeRelease order accesses to the shared rings with
// the kernel's (Go's atomics are sequentially consistent).
func loadAcquire(p *uint32) uint32     { return atomic.LoadUint32(p) }
func storeRelease(p *uint32, v uint32) { atomic.StoreUint32(p, v) }
