package poller_test

import (
	"sync"
	"sync/atomic"
	"testing"

	"blockcache/internal/poller"
)

// counter is a check that counts its calls and finds nothing waiting.
type counter struct{ n atomic.Int64 }

func (c *counter) check() bool { c.n.Add(1); return false }
func (c *counter) get() int64  { return c.n.Load() }

// TestPollRunsEveryCheckOnce: each Poll calls every registered check once.
func TestPollRunsEveryCheckOnce(t *testing.T) {
	var s poller.Set
	cs := make([]counter, 3)
	for i := range cs {
		s.Add(cs[i].check)
	}
	if got := s.Len(); got != len(cs) {
		t.Fatalf("Len = %d, want %d", got, len(cs))
	}
	const polls = 5
	for range polls {
		s.Poll()
	}
	for i := range cs {
		if got := cs[i].get(); got != polls {
			t.Errorf("check %d ran %d times in %d polls", i, got, polls)
		}
	}
}

// TestRemoveTakesItsOwnRegistration: the same function registered twice is
// two registrations, run twice per Poll; each remove takes only its own,
// and a second call of the same remove takes nothing more. Removing one
// from the middle keeps the others.
func TestRemoveTakesItsOwnRegistration(t *testing.T) {
	var s poller.Set
	var same, before, after counter
	s.Add(before.check)
	first := s.Add(same.check)
	second := s.Add(same.check)
	s.Add(after.check)

	s.Poll()
	if got := same.get(); got != 2 {
		t.Fatalf("a function registered twice ran %d times in one Poll, want 2", got)
	}
	first()
	if got := s.Len(); got != 3 {
		t.Fatalf("Len after one remove = %d, want 3", got)
	}
	s.Poll()
	if got := same.get(); got != 3 {
		t.Fatalf("after removing one of its two registrations it ran %d times in total, want 3", got)
	}
	first()
	if got := s.Len(); got != 3 {
		t.Fatalf("Len after removing the same registration twice = %d, want 3", got)
	}
	s.Poll()
	if got := same.get(); got != 4 {
		t.Fatalf("after a repeated remove it ran %d times in total, want 4", got)
	}
	second()
	if got := s.Len(); got != 2 {
		t.Fatalf("Len after removing both registrations = %d, want 2", got)
	}
	s.Poll()
	if got := same.get(); got != 4 {
		t.Fatalf("removed check ran: %d calls in total, want 4", got)
	}
	if b, a := before.get(), after.get(); b != 4 || a != 4 {
		t.Fatalf("the other checks ran %d and %d times in 4 polls", b, a)
	}
}

// TestNilAndZeroSet: a nil *Set and the zero Set are empty; Poll does
// nothing on either.
func TestNilAndZeroSet(t *testing.T) {
	var nilSet *poller.Set
	nilSet.Poll()
	if got := nilSet.Len(); got != 0 {
		t.Fatalf("nil Set: Len = %d", got)
	}
	var zero poller.Set
	zero.Poll()
	if got := zero.Len(); got != 0 {
		t.Fatalf("zero Set: Len = %d", got)
	}
	var c counter
	remove := zero.Add(c.check)
	remove()
	zero.Poll()
	if got, n := zero.Len(), c.get(); got != 0 || n != 0 {
		t.Fatalf("after Add and remove: Len = %d, check ran %d times", got, n)
	}
}

// TestPollDoesNotAllocate: Poll runs in a busy loop between IOs, so it
// must not allocate.
func TestPollDoesNotAllocate(t *testing.T) {
	var s poller.Set
	var a, b counter
	s.Add(a.check)
	s.Add(b.check)
	if n := testing.AllocsPerRun(100, func() { s.Poll() }); n != 0 {
		t.Fatalf("Poll with 2 checks allocates %.1f times", n)
	}
	if a.get() == 0 || b.get() == 0 {
		t.Fatalf("checks ran %d and %d times", a.get(), b.get())
	}
}

// TestConcurrentAddRemovePoll: workers add and remove checks while others
// poll; afterwards the set holds exactly the registrations never removed,
// and a Poll runs each of them once and no removed one. An Add or removal
// lost to a concurrent one shows only in some interleavings, hence the
// several runs.
func TestConcurrentAddRemovePoll(t *testing.T) {
	for range 5 {
		addRemovePoll(t)
	}
}

func addRemovePoll(t *testing.T) {
	t.Helper()
	var s poller.Set
	const workers, rounds, kept = 4, 300, 30
	var removed counter
	keptChecks := make([][kept]counter, workers)
	stop := make(chan struct{})
	var pollers sync.WaitGroup
	for range 2 {
		pollers.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
					s.Poll()
					_ = s.Len()
				}
			}
		})
	}
	start := make(chan struct{})
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			<-start
			for i := range rounds {
				remove := s.Add(removed.check)
				if i%7 == 0 {
					s.Add(removed.check)() // added and removed at once
				}
				remove()
				remove()
				if i%(rounds/kept) == 0 {
					s.Add(keptChecks[w][i/(rounds/kept)].check)
				}
			}
		})
	}
	close(start)
	wg.Wait()
	close(stop)
	pollers.Wait()

	if got := s.Len(); got != workers*kept {
		t.Fatalf("Len = %d, want %d", got, workers*kept)
	}
	before := removed.get()
	var ran [workers][kept]int64
	for w := range workers {
		for k := range kept {
			ran[w][k] = keptChecks[w][k].get()
		}
	}
	s.Poll()
	if got := removed.get(); got != before {
		t.Fatalf("a removed check ran %d times in a Poll after its removal", got-before)
	}
	for w := range workers {
		for k := range kept {
			if got := keptChecks[w][k].get() - ran[w][k]; got != 1 {
				t.Errorf("worker %d's check %d ran %d times in one Poll", w, k, got)
			}
		}
	}
}

// BenchmarkPoll measures a Poll over two checks that find nothing to do.
func BenchmarkPoll(b *testing.B) {
	var s poller.Set
	s.Add(func() bool { return false })
	s.Add(func() bool { return false })
	b.ReportAllocs()
	for b.Loop() {
		s.Poll()
	}
}

// TestPollReportsNetpoll: Poll reports completions waiting for the network
// poller when any check does, and still runs every check.
func TestPollReportsNetpoll(t *testing.T) {
	var s poller.Set
	var before, after counter
	waiting := false
	s.Add(before.check)
	s.Add(func() bool { return waiting })
	s.Add(after.check)
	if s.Poll() {
		t.Error("Poll reports waiting completions with no check finding any")
	}
	waiting = true
	if !s.Poll() {
		t.Error("Poll does not report the completions a check found")
	}
	if before.get() != 2 || after.get() != 2 {
		t.Errorf("checks ran %d and %d times in 2 polls, want 2 each", before.get(), after.get())
	}
}
