// Package poller runs completion checks from a goroutine that is awake
// anyway, as an SPDK reactor runs its pollers between IOs.
//
// Some devices finish IO on a signal that reaches a Go program only through
// the runtime's network poller: a delay device's deadline is a timerfd, an
// io_uring's completions an eventfd. The runtime looks at the poller only
// when a scheduler slot has nothing else to run, so while one goroutine
// keeps the daemon's slot busy (the NBD reader polling its socket for the
// client's next request) those completions wait. A device that can tell
// cheaply whether work has completed registers a check here; the busy
// goroutine calls Set.Poll between its tries. A check either completes the
// work itself (a delay device ends the delays that are due, with no system
// call), or reports that completions wait for the network poller (an
// io_uring's completion ring is not empty), and the busy goroutine then
// lets the runtime poll at once instead of at its next regular turn.
package poller

import (
	"slices"
	"sync"
	"sync/atomic"
)

// Func checks for completed work. It completes what it can itself (it
// wakes the goroutines waiting for it) and reports whether completions
// wait for the runtime's network poller. It must be cheap when nothing is
// due (it runs between the tries of a busy loop), must not block, and must
// be safe to call from any goroutine, concurrently with itself.
type Func func() (netpoll bool)

// Set is a set of checks, run together by Poll. The zero Set is empty and
// ready; a nil *Set is empty and stays so (Add panics, Poll does nothing).
// It is safe for concurrent use.
type Set struct {
	mu      sync.Mutex               // serialises Add and removals
	entries atomic.Pointer[[]*entry] // read without the lock by Poll; replaced, never changed
}

// entry is one registration; its address tells registrations of the same
// function apart.
type entry struct{ f Func }

// Add registers f and returns the function that removes it again. Removing
// twice is harmless. A Poll already running may still call f once after
// the removal returned.
func (s *Set) Add(f Func) (remove func()) {
	e := &entry{f: f}
	s.mu.Lock()
	defer s.mu.Unlock()
	var next []*entry
	if cur := s.entries.Load(); cur != nil {
		next = slices.Clone(*cur)
	}
	next = append(next, e)
	s.entries.Store(&next)
	return func() { s.remove(e) }
}

func (s *Set) remove(e *entry) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := s.entries.Load()
	if cur == nil {
		return
	}
	next := slices.DeleteFunc(slices.Clone(*cur), func(x *entry) bool { return x == e })
	s.entries.Store(&next)
}

// Poll runs every registered check once and reports whether any found
// completions waiting for the runtime's network poller. It allocates
// nothing.
func (s *Set) Poll() (netpoll bool) {
	if s == nil {
		return false
	}
	cur := s.entries.Load()
	if cur == nil {
		return false
	}
	for _, e := range *cur {
		if e.f() {
			netpoll = true
		}
	}
	return netpoll
}

// Len is the number of registered checks.
func (s *Set) Len() int {
	if s == nil {
		return 0
	}
	if cur := s.entries.Load(); cur != nil {
		return len(*cur)
	}
	return 0
}
