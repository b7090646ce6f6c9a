package bdev

import (
	"fmt"
	"slices"
	"sync/atomic"
)

// EventKind says what happened to a device.
type EventKind uint8

// Event kinds. The zero EventKind is not a valid kind.
const (
	// EventAdded is published once a device was registered.
	EventAdded EventKind = iota + 1
	// EventRemoved is published once a device was unregistered, after the
	// hot-remove callback of its claim holder returned.
	EventRemoved
)

// String returns "added" or "removed".
func (k EventKind) String() string {
	switch k {
	case EventAdded:
		return "added"
	case EventRemoved:
		return "removed"
	}
	return fmt.Sprintf("EventKind(%d)", uint8(k))
}

// Event is a change of the registry's set of devices.
type Event struct {
	Kind   EventKind
	Name   string // the device's registered name
	Device Device
}

// subscriber is one Subscribe call; fn is immutable.
type subscriber struct {
	fn        func(Event)
	cancelled atomic.Bool
}

// pendingEvent is an event together with the subscribers it goes to: those
// subscribed when the change was made.
type pendingEvent struct {
	ev   Event
	subs []*subscriber
}

// Subscribe calls fn for every later change of the registry and returns a
// function that stops the calls.
//
// Delivery contract: events reach subscribers one at a time and in the order
// the changes were made, never concurrently with each other; for each event
// the subscribers are called in subscription order. An event goes to the
// subscribers present when its change was made. fn runs without the registry
// lock held, on the goroutine that made the change, or, when another
// goroutine is already delivering events (including a change made from
// within fn itself), on that goroutine, shortly after; so Register and
// Unregister may return before their event was delivered only when events
// are being delivered concurrently. fn should not block for long: it holds
// up every later event. A panic in fn propagates to the goroutine
// delivering; the events still queued are delivered by the next change.
//
// cancel is idempotent; once it returns, fn is not called again except by a
// call already running on another goroutine.
func (r *Registry) Subscribe(fn func(Event)) (cancel func()) {
	s := &subscriber{fn: fn}
	r.mu.Lock()
	r.mu.subs = append(slices.Clip(r.mu.subs), s)
	r.mu.Unlock()
	return func() {
		if s.cancelled.Swap(true) {
			return
		}
		r.mu.Lock()
		r.mu.subs = slices.DeleteFunc(slices.Clone(r.mu.subs), func(x *subscriber) bool { return x == s })
		r.mu.Unlock()
	}
}

// publishLocked queues ev for the current subscribers. The caller holds
// r.mu and calls deliver after releasing it.
func (r *Registry) publishLocked(ev Event) {
	if len(r.mu.subs) == 0 {
		return
	}
	r.mu.queue = append(r.mu.queue, pendingEvent{ev: ev, subs: r.mu.subs})
}

// deliver drains the event queue unless another goroutine is already
// draining it, in which case that goroutine delivers what was queued.
// Clearing delivering in the same critical section that finds the queue
// empty is what makes sure no queued event is left behind.
func (r *Registry) deliver() {
	r.mu.Lock()
	if r.mu.delivering {
		r.mu.Unlock()
		return
	}
	r.mu.delivering = true
	r.mu.Unlock()

	finished := false
	defer func() {
		if !finished { // a subscriber panicked: let the next change deliver
			r.mu.Lock()
			r.mu.delivering = false
			r.mu.Unlock()
		}
	}()
	for {
		r.mu.Lock()
		if len(r.mu.queue) == 0 {
			r.mu.queue = nil
			r.mu.delivering = false
			finished = true
			r.mu.Unlock()
			return
		}
		p := r.mu.queue[0]
		r.mu.queue[0] = pendingEvent{}
		r.mu.queue = r.mu.queue[1:]
		r.mu.Unlock()

		for _, s := range p.subs {
			if !s.cancelled.Load() {
				s.fn(p.ev)
			}
		}
	}
}
