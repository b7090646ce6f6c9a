// Package hrtimer sleeps with microsecond precision, for latencies that
// model a device (the delay bdev).
//
// time.Sleep is precise only while the process is busy. When every
// goroutine waits, the runtime sleeps in the netpoller (epoll_pwait) with a
// timeout in whole milliseconds, rounded up below one millisecond and down
// above it: on the 2-CPU test VM, an otherwise idle process's
// time.Sleep(100µs) returned about 1 ms late (median), time.Sleep(1ms)
// about 0.1 ms late and time.Sleep(1.5ms) about 0.7 ms late.
//
// A Timer keeps one timerfd (CLOCK_MONOTONIC, nanosecond resolution, no
// timer slack) armed for its earliest sleeper and watched by the netpoller
// like a socket: the kernel wakes the netpoller when it expires, whatever
// timeout the runtime chose. Its goroutine then wakes every sleeper whose
// time has come and arms the timerfd for the next. Sleepers wait on
// channels kept for reuse, so a Sleep allocates nothing in the steady
// state.
//
// A goroutine that is awake anyway can call Poll to wake the sleepers due
// at once, without waiting for the netpoller (see package poller).
package hrtimer

import (
	"container/heap"
	"errors"
	"fmt"
	"math"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Timer wakes sleepers at their deadlines. It is safe for concurrent use.
type Timer struct {
	file *os.File      // the non-blocking timerfd, in the netpoller
	fd   int           // file's descriptor (File.Fd would make it blocking)
	base time.Time     // deadlines are nanoseconds since base (monotonic)
	done chan struct{} // closed when the goroutine returns
	// closeFile closes file once: Close and the goroutine may both try.
	closeFile func() error
	// next is the earliest deadline asleep, math.MaxInt64 with nobody
	// asleep; written under mu, read without it by Poll.
	next atomic.Int64

	mu struct {
		sync.Mutex
		sleepers sleepers   // by deadline, earliest first
		idle     []*sleeper // woken and returned, for reuse
		armed    int64      // the deadline the timerfd is set for; 0 if none
		closing  bool
	}
}

// sleeper is one goroutine in Sleep.
type sleeper struct {
	at   int64         // deadline, nanoseconds since the Timer's base
	wake chan struct{} // capacity 1
}

// New creates a timer and its goroutine; Close stops them.
func New() (*Timer, error) {
	fd, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_NONBLOCK|unix.TFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("timerfd_create: %w", err)
	}
	t := &Timer{file: os.NewFile(uintptr(fd), "hrtimer timerfd"), fd: fd, base: time.Now(), done: make(chan struct{})}
	t.closeFile = sync.OnceValue(t.file.Close)
	t.next.Store(math.MaxInt64)
	rc, err := t.file.SyscallConn()
	if err != nil {
		t.file.Close()
		return nil, fmt.Errorf("timerfd: %w", err)
	}
	go t.run(rc)
	return t, nil
}

// Sleep returns after at least d, within microseconds of it when a CPU is
// free. After Close it sleeps with time.Sleep.
func (t *Timer) Sleep(d time.Duration) {
	if d <= 0 {
		return
	}
	now := time.Since(t.base)
	at := int64(now + d)
	if at < int64(now) {
		// d beyond the int64 range (the delay bdev's RPC takes
		// latencies up to math.MaxInt64 ns). A wrapped, negative
		// deadline would be armed for centuries and, as t.mu.armed,
		// stop every later Sleep from arming the timer: they would
		// never wake. The latest deadline sleeps as time.Sleep would.
		at = math.MaxInt64
	}
	t.mu.Lock()
	if t.mu.closing {
		t.mu.Unlock()
		time.Sleep(d)
		return
	}
	var s *sleeper
	if n := len(t.mu.idle); n > 0 {
		s = t.mu.idle[n-1]
		t.mu.idle = t.mu.idle[:n-1]
	} else {
		s = &sleeper{wake: make(chan struct{}, 1)}
	}
	s.at = at
	heap.Push(&t.mu.sleepers, s)
	t.next.Store(t.mu.sleepers[0].at)
	if t.mu.armed == 0 || at < t.mu.armed {
		t.armLocked(at)
	}
	t.mu.Unlock()
	<-s.wake
	t.mu.Lock()
	t.mu.idle = append(t.mu.idle, s)
	t.mu.Unlock()
}

// Close stops the timer once its sleepers have woken, each at its time;
// it does not wait for them. Later Sleeps use time.Sleep.
func (t *Timer) Close() error {
	t.mu.Lock()
	if t.mu.closing {
		t.mu.Unlock()
		return nil
	}
	t.mu.closing = true
	idle := t.mu.sleepers.Len() == 0
	t.mu.Unlock()
	if idle {
		// Nothing left to wake: closing the file ends the goroutine's
		// wait. Otherwise the goroutine closes it after the last wake-up.
		return t.closeFile()
	}
	return nil
}

// run is the timer's goroutine: it waits for the timerfd to expire and
// wakes the sleepers due, until Close with no sleeper left.
func (t *Timer) run(rc syscall.RawConn) {
	defer close(t.done)
	var expirations [8]byte
	expired := func(fd uintptr) bool {
		// Reading clears the expiry; EAGAIN means it has not come yet.
		_, err := unix.Read(int(fd), expirations[:])
		return !errors.Is(err, unix.EAGAIN)
	}
	for {
		if err := rc.Read(expired); err != nil {
			return // the file was closed: Close with nobody asleep
		}
		if t.wakeDue() {
			t.closeFile()
			return
		}
	}
}

// wakeDue wakes every sleeper whose deadline has passed and arms the
// timerfd for the earliest left. It reports whether the timer is closing
// with nobody left asleep.
func (t *Timer) wakeDue() (finished bool) {
	now := int64(time.Since(t.base))
	t.mu.Lock()
	defer t.mu.Unlock()
	t.mu.armed = 0
	t.wakeLocked(now)
	if t.mu.sleepers.Len() > 0 {
		t.armLocked(t.mu.sleepers[0].at)
		return false
	}
	return t.mu.closing
}

// Poll wakes the sleepers whose deadline has passed, without waiting for
// the timerfd's expiry to reach the goroutine through the runtime's network
// poller, which a busy scheduler slot looks at only now and then (package
// poller). It makes no system call, takes no lock while nobody is due,
// never waits for one (another goroutine holding it is left to finish),
// and is safe to call from any goroutine. The timerfd stays armed: its
// expiry still wakes the goroutine, which then finds fewer sleepers due.
func (t *Timer) Poll() {
	now := int64(time.Since(t.base))
	if t.next.Load() > now || !t.mu.TryLock() {
		return // nobody due, or somebody is sleeping or waking them now
	}
	t.wakeLocked(now)
	t.mu.Unlock()
}

// wakeLocked wakes every sleeper due at now. t.mu is held.
func (t *Timer) wakeLocked(now int64) {
	for t.mu.sleepers.Len() > 0 && t.mu.sleepers[0].at <= now {
		s := heap.Pop(&t.mu.sleepers).(*sleeper)
		s.wake <- struct{}{}
	}
	next := int64(math.MaxInt64)
	if t.mu.sleepers.Len() > 0 {
		next = t.mu.sleepers[0].at
	}
	t.next.Store(next)
}

// armLocked sets the timerfd to expire at deadline at (relative to now:
// the monotonic clock Go reads and the kernel's CLOCK_MONOTONIC differ by
// an offset). t.mu is held.
func (t *Timer) armLocked(at int64) {
	left := at - int64(time.Since(t.base))
	if left < 1 {
		left = 1 // zero would disarm it
	}
	spec := unix.ItimerSpec{Value: unix.NsecToTimespec(left)}
	if err := unix.TimerfdSettime(t.fd, 0, &spec, nil); err != nil {
		// EBADF or EINVAL: a bug here, not a condition to recover from;
		// a sleeper would otherwise never wake.
		panic(fmt.Errorf("timerfd_settime: %w", err))
	}
	t.mu.armed = at
}

// sleepers is a min-heap of sleepers by deadline (container/heap).
type sleepers []*sleeper

func (h sleepers) Len() int           { return len(h) }
func (h sleepers) Less(i, j int) bool { return h[i].at < h[j].at }
func (h sleepers) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *sleepers) Push(x any)        { *h = append(*h, x.(*sleeper)) }
func (h *sleepers) Pop() any {
	old := *h
	s := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return s
}
