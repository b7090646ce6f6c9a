package bdevtest

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"blockcache/internal/bdev"
)

// IOGate wraps a device so that the reads and writes a predicate picks wait
// until Release: a test holds slow IO in flight (a core read behind a cache
// miss, a write-back) while it checks what else proceeds, and counts how
// many such IOs were held at once.
type IOGate struct {
	bdev.Device
	hold func(write bool, off, n int64) bool

	held, maxHeld atomic.Int64
	release       chan struct{}
	releaseOnce   sync.Once
}

// NewIOGate wraps d; hold says which IOs wait (write is false for reads).
func NewIOGate(d bdev.Device, hold func(write bool, off, n int64) bool) *IOGate {
	return &IOGate{Device: d, hold: hold, release: make(chan struct{})}
}

// Held is the number of IOs waiting at the gate now.
func (g *IOGate) Held() int64 { return g.held.Load() }

// MaxHeld is the largest number of IOs that waited at the gate at once.
func (g *IOGate) MaxHeld() int64 { return g.maxHeld.Load() }

// WaitHeld waits until at least n IOs wait at the gate, or timeout passes,
// and reports whether they did.
func (g *IOGate) WaitHeld(n int64, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for g.held.Load() < n {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(time.Millisecond)
	}
	return true
}

// Release lets every held IO, and every later one, through. It may be
// called more than once.
func (g *IOGate) Release() { g.releaseOnce.Do(func() { close(g.release) }) }

func (g *IOGate) wait(write bool, off, n int64) {
	if !g.hold(write, off, n) {
		return
	}
	select {
	case <-g.release:
		return
	default:
	}
	cur := g.held.Add(1)
	for m := g.maxHeld.Load(); cur > m && !g.maxHeld.CompareAndSwap(m, cur); m = g.maxHeld.Load() {
	}
	<-g.release
	g.held.Add(-1)
}

// ReadAt implements bdev.Device.
func (g *IOGate) ReadAt(p []byte, off int64) error {
	g.wait(false, off, int64(len(p)))
	return g.Device.ReadAt(p, off)
}

// WriteAt implements bdev.Device.
func (g *IOGate) WriteAt(p []byte, off int64, fua bool) error {
	g.wait(true, off, int64(len(p)))
	return g.Device.WriteAt(p, off, fua)
}

// ReleaseAndReceive opens g and returns what ch delivers next: the result
// of an operation that was held at the gate. It fails t if nothing comes
// within 10 s, and reports an error if it came more than 2 s after the
// release (the operation should end promptly once its IO is let through).
// what names the operation in the messages.
func ReleaseAndReceive[T any](t testing.TB, g *IOGate, ch <-chan T, what string) T {
	t.Helper()
	start := time.Now()
	g.Release()
	var v T
	select {
	case v = <-ch:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s did not end 10 s after the gate opened", what)
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Errorf("%s took %v after the gate opened", what, el)
	}
	return v
}
