package bdevtest

import (
	"sync/atomic"

	"blockcache/internal/bdev"
)

// FlushGate wraps a device so that its next Flush after Arm waits until
// Release: a test holds a flush (a metadata sync, a volume flush) in flight
// while it does something else.
type FlushGate struct {
	bdev.Device
	armed            atomic.Bool
	entered, release chan struct{}
}

// NewFlushGate wraps d.
func NewFlushGate(d bdev.Device) *FlushGate {
	return &FlushGate{Device: d, entered: make(chan struct{}), release: make(chan struct{})}
}

// Arm makes the next Flush wait for Release. A gate holds one flush, once.
func (g *FlushGate) Arm() { g.armed.Store(true) }

// Entered is closed when the held Flush has begun.
func (g *FlushGate) Entered() <-chan struct{} { return g.entered }

// Release lets the held Flush go on.
func (g *FlushGate) Release() { close(g.release) }

// Flush implements bdev.Device.
func (g *FlushGate) Flush() error {
	if g.armed.CompareAndSwap(true, false) {
		close(g.entered)
		<-g.release
	}
	return g.Device.Flush()
}
