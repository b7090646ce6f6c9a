package uring

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestRingPollKeepsReaperAwake: two reads of empty pipes are in flight;
// the first is completed by a write. A ring that polls delivers it and
// goes on polling for the second (no park), delivers the second by
// polling, and parks once nothing is in flight, whatever its budget. A
// ring that does not poll parks between the two.
func TestRingPollKeepsReaperAwake(t *testing.T) {
	for _, c := range []struct {
		poll time.Duration
		// parksBetween is how many parks the completion goroutine has
		// made once the first read returned: the one at start, plus one
		// after delivering it unless it polls.
		parksBetween uint64
	}{
		{poll: 0, parksBetween: 2},
		{poll: time.Hour, parksBetween: 1},
	} {
		t.Run(c.poll.String(), func(t *testing.T) {
			r, err := New(4, Options{Poll: c.poll})
			if err != nil {
				t.Fatal(err)
			}
			// Idle at start, it parks, and nothing wakes it until the
			// first completion.
			waitFor(t, "the completion goroutine parked", func() bool { return r.parks.Load() == 1 })
			rdA, wrA := testPipe(t)
			rdB, wrB := testPipe(t)
			a := pipeRead(r, rdA)
			b := pipeRead(r, rdB)
			waitFor(t, "both reads in flight", func() bool { return len(r.free) == 2 })

			writeByte(t, wrA)
			if err := <-a; err != nil {
				t.Fatalf("first read: %v", err)
			}
			waitFor(t, "the first read's slot released", func() bool { return len(r.free) == 3 })
			if c.parksBetween == 2 {
				waitFor(t, "a park after the first delivery", func() bool { return r.parks.Load() == 2 })
			} else {
				time.Sleep(50 * time.Millisecond)
			}
			if got := r.parks.Load(); got != c.parksBetween {
				t.Fatalf("%d parks with the second read in flight, want %d", got, c.parksBetween)
			}

			writeByte(t, wrB)
			if err := <-b; err != nil {
				t.Fatalf("second read: %v", err)
			}
			// Idle: the goroutine parks even with an hour of budget.
			waitFor(t, "a park once idle", func() bool { return r.parks.Load() == c.parksBetween+1 })
			if err := r.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
		})
	}
}

// TestRingPollCloseInFlight: Close of a polling ring with a read that
// never completes by itself in flight cancels it and returns; the
// completion goroutine, polling for that read with an hour of budget,
// sees Close's entries and stops.
func TestRingPollCloseInFlight(t *testing.T) {
	r, err := New(2, Options{Poll: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	rdA, wrA := testPipe(t)
	rdB, _ := testPipe(t)
	a := pipeRead(r, rdA)
	b := pipeRead(r, rdB)
	waitFor(t, "both reads in flight", func() bool { return len(r.free) == 0 })
	writeByte(t, wrA) // the completion goroutine now polls for b
	if err := <-a; err != nil {
		t.Fatalf("first read: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- r.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Close: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return while the ring polled")
	}
	if err := <-b; !errors.Is(err, unix.ECANCELED) && !errors.Is(err, unix.EINTR) {
		t.Fatalf("read in flight at Close: %v, want ECANCELED or EINTR", err)
	}
}

// TestPollWithoutCoopTaskrun: where the kernel refuses COOP_TASKRUN and
// TASKRUN_FLAG (before Linux 5.19: EINVAL), a polling ring is set up
// without them, and its IO completes.
func TestPollWithoutCoopTaskrun(t *testing.T) {
	var refused int
	old := func(entries uint32, p *params) (int, error) {
		if p.flags&(setupCoopTaskrun|setupTaskrunFlag) != 0 {
			refused++
			return -1, unix.EINVAL
		}
		return sysSetup(entries, p)
	}
	r, err := newRing(4, Options{Poll: time.Millisecond}, old)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if refused != 1 || r.coop {
		t.Fatalf("setup refused %d times, coop %v; want 1 and false", refused, r.coop)
	}
	rd, wr := testPipe(t)
	done := pipeRead(r, rd)
	writeByte(t, wr)
	if err := <-done; err != nil {
		t.Fatalf("read: %v", err)
	}
}

// kernelAtLeast reports whether the running kernel's release is at least
// major.minor.
func kernelAtLeast(t *testing.T, major, minor int) bool {
	t.Helper()
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		t.Fatal(err)
	}
	var ma, mi int
	if _, err := fmt.Sscanf(unix.ByteSliceToString(u.Release[:]), "%d.%d", &ma, &mi); err != nil {
		t.Fatalf("kernel release %q: %v", u.Release[:], err)
	}
	return ma > major || ma == major && mi >= minor
}

// TestNewRefusesNegativePoll: a negative budget is EINVAL.
func TestNewRefusesNegativePoll(t *testing.T) {
	if _, err := New(4, Options{Poll: -time.Millisecond}); !errors.Is(err, unix.EINVAL) {
		t.Fatalf("New with Poll -1ms: %v, want EINVAL", err)
	}
}

// pipeRead reads one byte of the pipe rd through r in a goroutine.
func pipeRead(r *Ring, rd int) <-chan error {
	done := make(chan error, 1)
	go func() {
		_, err := r.Pread(rd, make([]byte, 1), -1)
		done <- err
	}()
	return done
}

func writeByte(t *testing.T, fd int) {
	t.Helper()
	if _, err := unix.Write(fd, []byte{1}); err != nil {
		t.Fatal(err)
	}
}

// waitFor waits up to ten seconds for cond, failing the test with what.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}
