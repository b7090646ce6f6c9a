package ocf

import (
	"testing"
	"time"
)

// TestStripesYieldKeepsOrder: a range whose RW locks were yielded lets
// readers in (shared locks, lock-free reads that validate) and keeps every
// exclusive locker out (TryLock fails, lockSet waits) until the holder
// takes the RW locks back and unlocks; and an exclusive locker waiting for
// an order lock holds no RW lock meanwhile.
func TestStripesYieldKeepsOrder(t *testing.T) {
	s := newStripes(1)
	s.lockRange(0, 62, 4, true) // stripes 62, 63, 0, 1
	s.yieldRange(0, 62, 4)
	for _, i := range []int{62, 63, 0, 1} {
		l := &s.locks[i]
		seq, ok := l.readBegin()
		if !ok {
			t.Errorf("stripe %d: a lock-free read may not begin while yielded", i)
		}
		if !l.TryRLock() {
			t.Errorf("stripe %d: a reader was refused while yielded", i)
		} else {
			l.RUnlock()
		}
		if !l.readValid(seq) {
			t.Errorf("stripe %d: a reader invalidated a lock-free read", i)
		}
		if l.TryLock() {
			t.Fatalf("stripe %d: TryLock took a yielded stripe", i)
		}
	}
	locked := make(chan struct{})
	go func() {
		s.lockSet([]int{5, 62})
		close(locked)
	}()
	time.Sleep(20 * time.Millisecond) // give a wrong lock time to show
	select {
	case <-locked:
		t.Fatal("lockSet took a yielded stripe")
	default:
	}
	if !s.locks[5].TryRLock() {
		t.Error("an exclusive locker waiting for stripe 62 holds stripe 5's RW lock")
	} else {
		s.locks[5].RUnlock()
	}
	s.resumeRange(0, 62, 4)
	if _, ok := s.locks[0].readBegin(); ok {
		t.Error("a lock-free read may begin after the RW locks were taken back")
	}
	s.unlockRange(0, 62, 4, true)
	select {
	case <-locked:
	case <-time.After(5 * time.Second):
		t.Fatal("lockSet did not get the stripes after unlockRange")
	}
	s.unlockSet([]int{5, 62})
	for i, l := range lockedStripes(&s) {
		if l {
			t.Errorf("stripe %d held at the end", i)
		}
	}
}
