package hrtimer

import (
	"fmt"
	"math"
	"runtime"
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// startSleep starts a Sleep(d) and waits until the heap holds want
// sleepers. The returned channel is closed when the Sleep returns. It
// reports false if the Sleep returned before the heap was seen to hold
// them.
func startSleep(t *testing.T, tm *Timer, d time.Duration, want int) (<-chan struct{}, bool) {
	t.Helper()
	woke := make(chan struct{})
	go func() {
		tm.Sleep(d)
		close(woke)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		tm.mu.Lock()
		n := tm.mu.sleepers.Len()
		tm.mu.Unlock()
		if n == want {
			return woke, true
		}
		if !asleep(woke) {
			return woke, false
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d sleepers in the heap after 10s, want %d", n, want)
		}
		runtime.Gosched()
	}
}

// sleepLong starts a Sleep(d), d long enough not to end during the test,
// as the want-th sleeper.
func sleepLong(t *testing.T, tm *Timer, d time.Duration, want int) <-chan struct{} {
	t.Helper()
	woke, ok := startSleep(t, tm, d, want)
	if !ok {
		t.Fatalf("Sleep(%v) returned at once", d)
	}
	return woke
}

// disarm stops the timerfd so that only Poll can wake the sleepers. It
// reports false if the earliest deadline had already passed: the timerfd
// may then have expired and its goroutine be about to wake that sleeper.
func disarm(t *testing.T, tm *Timer) bool {
	t.Helper()
	tm.mu.Lock()
	defer tm.mu.Unlock()
	if err := unix.TimerfdSettime(tm.fd, 0, &unix.ItimerSpec{}, nil); err != nil {
		t.Fatalf("timerfd_settime: %v", err)
	}
	tm.mu.armed = 0
	return int64(time.Since(tm.base)) < tm.mu.sleepers[0].at
}

// expireAll moves every sleeper's deadline to the timer's base, as if they
// had all passed, so that the next Poll wakes them.
func expireAll(tm *Timer) {
	tm.mu.Lock()
	defer tm.mu.Unlock()
	for _, s := range tm.mu.sleepers {
		s.at = 0
	}
	tm.next.Store(0)
}

// deadlines returns the sleepers' deadlines, earliest first.
func deadlines(tm *Timer) []int64 {
	tm.mu.Lock()
	defer tm.mu.Unlock()
	ats := make([]int64, 0, len(tm.mu.sleepers))
	for _, s := range tm.mu.sleepers {
		ats = append(ats, s.at)
	}
	slices.Sort(ats)
	return ats
}

// asleep reports whether a sleeper has not returned yet.
func asleep(woke <-chan struct{}) bool {
	select {
	case <-woke:
		return false
	default:
		return true
	}
}

// awaitWake fails the test unless woke is closed within a generous bound.
func awaitWake(t *testing.T, woke <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-woke:
	case <-time.After(5 * time.Second):
		t.Fatalf("%s still asleep 5s after Poll", what)
	}
}

// newDisarmed returns a timer with a Sleep(d) asleep and the timerfd
// disarmed before its deadline, trying longer durations from d on while
// the machine is too slow to disarm it in time. It returns the duration
// used.
func newDisarmed(t *testing.T, d time.Duration) (*Timer, <-chan struct{}, time.Duration) {
	t.Helper()
	for ; d <= 10*time.Second; d *= 10 {
		tm := newTimer(t)
		woke, ok := startSleep(t, tm, d, 1)
		if ok && disarm(t, tm) {
			return tm, woke, d
		}
		tm.Poll() // the timer's goroutine may not have woken it
		awaitWake(t, woke, "a sleeper past its deadline")
	}
	t.Fatal("could not disarm a timer before its deadline")
	return nil, nil, 0
}

// TestPollWakesDueSleeper: with the timerfd disarmed, a sleeper stays
// asleep past its deadline until a Poll wakes it.
func TestPollWakesDueSleeper(t *testing.T) {
	tm, woke, d := newDisarmed(t, time.Millisecond)
	time.Sleep(d + 20*time.Millisecond)
	if !asleep(woke) {
		t.Fatal("the sleeper woke with the timerfd disarmed: the test cannot tell Poll's wake-up apart")
	}
	tm.Poll()
	awaitWake(t, woke, "a sleeper past its deadline")
	tm.mu.Lock()
	n := tm.mu.sleepers.Len()
	tm.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d sleepers left in the heap", n)
	}
	if next := tm.next.Load(); next != math.MaxInt64 {
		t.Fatalf("next = %d with nobody asleep, want math.MaxInt64", next)
	}
}

// TestPollWakesOnlyDue: a Poll before a sleeper's deadline leaves it
// asleep, while it wakes one whose deadline passed.
func TestPollWakesOnlyDue(t *testing.T) {
	var tm *Timer
	var short, long <-chan struct{}
	var d time.Duration
	for d = time.Millisecond; ; d *= 10 {
		if d > 10*time.Second {
			t.Fatal("could not disarm a timer before its deadline")
		}
		tm = newTimer(t)
		long = sleepLong(t, tm, time.Hour, 1)
		var ok bool
		short, ok = startSleep(t, tm, d, 2)
		if ok && disarm(t, tm) {
			break
		}
		expireAll(tm)
		tm.Poll()
		awaitWake(t, short, "a sleeper past its deadline")
		awaitWake(t, long, "a sleeper whose deadline was moved to the past")
	}
	longAt := deadlines(tm)[1:]
	tm.Poll()
	if !slices.Contains(deadlines(tm), longAt[0]) {
		t.Fatal("Poll woke a sleeper an hour before its deadline")
	}
	time.Sleep(d + 20*time.Millisecond)
	if !asleep(short) {
		t.Fatal("the sleeper woke with the timerfd disarmed: the test cannot tell Poll's wake-up apart")
	}
	tm.Poll()
	awaitWake(t, short, "a sleeper past its deadline")
	if left := deadlines(tm); !slices.Equal(left, longAt) {
		t.Fatalf("after Poll the heap holds deadlines %v, want only the hour's %v", left, longAt)
	}
	if next := tm.next.Load(); next != longAt[0] {
		t.Fatalf("after the wake-up next = %d, want the hour's deadline %d", next, longAt[0])
	}
	if !asleep(long) {
		t.Fatal("Poll woke a sleeper an hour before its deadline")
	}
	expireAll(tm)
	tm.Poll()
	awaitWake(t, long, "a sleeper whose deadline was moved to the past")
}

// TestNextIsEarliestDeadline: next is math.MaxInt64 with nobody asleep and
// the earliest deadline of the sleepers otherwise, whatever order they
// came in; it is back to math.MaxInt64 once Poll woke them all.
func TestNextIsEarliestDeadline(t *testing.T) {
	tm := newTimer(t)
	if next := tm.next.Load(); next != math.MaxInt64 {
		t.Fatalf("next = %d on a new timer, want math.MaxInt64", next)
	}
	var woke []<-chan struct{}
	// lo and hi bound the earliest deadline: the start of its Sleep call
	// plus its duration, and the moment it was in the heap plus it.
	var lo, hi int64 = math.MaxInt64, math.MaxInt64
	for i, d := range []time.Duration{3 * time.Hour, time.Hour, 2 * time.Hour, 4 * time.Hour} {
		before := int64(time.Since(tm.base))
		woke = append(woke, sleepLong(t, tm, d, i+1))
		after := int64(time.Since(tm.base))
		if before+int64(d) < lo {
			lo, hi = before+int64(d), after+int64(d)
		}
		next := tm.next.Load()
		if next < lo || next > hi {
			t.Fatalf("after Sleep(%v): next = %d, want the earliest deadline, in [%d, %d]", d, next, lo, hi)
		}
		tm.mu.Lock()
		for _, s := range tm.mu.sleepers {
			if s.at < next {
				t.Errorf("after Sleep(%v): next = %d, later than a sleeper's deadline %d", d, next, s.at)
			}
		}
		tm.mu.Unlock()
	}
	expireAll(tm)
	tm.Poll()
	for i, w := range woke {
		awaitWake(t, w, fmt.Sprintf("sleeper %d", i))
	}
	if next := tm.next.Load(); next != math.MaxInt64 {
		t.Fatalf("next = %d after Poll woke everybody, want math.MaxInt64", next)
	}
}

// TestPollNobodyDueTakesNoLockNorAllocates: Poll runs between the tries of
// a busy loop, so while nobody is due it neither allocates nor waits for
// the timer's lock; once the sleeper is due it wakes it.
func TestPollNobodyDueTakesNoLockNorAllocates(t *testing.T) {
	tm := newTimer(t)
	if n := testing.AllocsPerRun(100, tm.Poll); n != 0 {
		t.Fatalf("Poll with nobody asleep allocates %.1f times", n)
	}
	woke := sleepLong(t, tm, time.Hour, 1)
	if n := testing.AllocsPerRun(100, tm.Poll); n != 0 {
		t.Fatalf("Poll with nobody due allocates %.1f times", n)
	}
	tm.mu.Lock()
	polled := make(chan struct{})
	go func() {
		tm.Poll()
		close(polled)
	}()
	select {
	case <-polled:
		tm.mu.Unlock()
	case <-time.After(5 * time.Second):
		tm.mu.Unlock()
		t.Fatal("Poll with nobody due waited for the timer's lock")
	}
	if !asleep(woke) {
		t.Fatal("Poll woke a sleeper an hour before its deadline")
	}
	expireAll(tm)
	tm.Poll()
	awaitWake(t, woke, "a sleeper whose deadline was moved to the past")
}
