package errinj

import (
	"fmt"
	"math"
	"strings"
	"sync/atomic"
)

// Predicate selects ops. Predicates are evaluated concurrently by concurrent
// IO and are safe for that. Stateful ones (OnIndex, NextN, Randomly) advance
// on every evaluation, so where they sit inside And or Or matters: And stops
// at the first false operand and Or at the first true one.
type Predicate interface {
	Evaluate(op Op) bool
	String() string
}

// kinds matches ops of a set of kinds.
type kinds uint32

func (k kinds) Evaluate(op Op) bool { return k&(1<<op.Kind) != 0 }

func (k kinds) String() string {
	var names []string
	for i := range numOpKinds {
		if k&(1<<i) != 0 {
			names = append(names, i.String())
		}
	}
	return "(Kind " + strings.Join(names, " ") + ")"
}

// OfKind matches ops of any of the given kinds.
func OfKind(ks ...OpKind) Predicate {
	var k kinds
	for _, x := range ks {
		k |= 1 << x
	}
	return k
}

// Reads matches reads.
func Reads() Predicate { return OfKind(OpRead) }

// Writes matches writes (not discards or write-zeroes; use OfKind for those).
func Writes() Predicate { return OfKind(OpWrite) }

// Flushes matches flushes.
func Flushes() Predicate { return OfKind(OpFlush) }

// inRange matches ops overlapping [off, off+n).
type inRange struct{ off, n int64 }

func (r inRange) Evaluate(op Op) bool {
	return op.Len > 0 && r.n > 0 && op.Offset < r.off+r.n && r.off < op.Offset+op.Len
}

func (r inRange) String() string { return fmt.Sprintf("(InRange %d %d)", r.off, r.n) }

// InRange matches ops whose byte range overlaps [off, off+length). A flush,
// which has no range, never matches.
func InRange(off, length int64) Predicate { return inRange{off, length} }

type and []Predicate

func (a and) Evaluate(op Op) bool {
	for _, p := range a {
		if !p.Evaluate(op) {
			return false
		}
	}
	return true
}

func (a and) String() string { return join("And", a) }

// And matches ops all of ps match, evaluating them in order and stopping at
// the first that does not.
func And(ps ...Predicate) Predicate { return and(ps) }

type or []Predicate

func (o or) Evaluate(op Op) bool {
	for _, p := range o {
		if p.Evaluate(op) {
			return true
		}
	}
	return false
}

func (o or) String() string { return join("Or", o) }

// Or matches ops any of ps matches, evaluating them in order and stopping at
// the first that does.
func Or(ps ...Predicate) Predicate { return or(ps) }

type not struct{ p Predicate }

func (n not) Evaluate(op Op) bool { return !n.p.Evaluate(op) }
func (n not) String() string      { return "(Not " + n.p.String() + ")" }

// Not matches ops p does not match.
func Not(p Predicate) Predicate { return not{p} }

func join(name string, ps []Predicate) string {
	parts := make([]string, len(ps))
	for i, p := range ps {
		parts[i] = p.String()
	}
	return "(" + name + " " + strings.Join(parts, " ") + ")"
}

// onIndex matches the index-th evaluation.
type onIndex struct {
	index int64
	n     atomic.Int64
}

func (o *onIndex) Evaluate(Op) bool { return o.n.Add(1)-1 == o.index }
func (o *onIndex) String() string   { return fmt.Sprintf("(OnIndex %d)", o.index) }

// OnIndex matches only the index-th op it is evaluated on, counting from 0.
// And(Writes(), OnIndex(2)) matches the third write.
func OnIndex(index int64) Predicate { return &onIndex{index: index} }

// Countdown matches the next n ops it is evaluated on, then nothing, like
// the num_errors of SPDK's bdev_error_inject_error. It is made by NextN.
type Countdown struct {
	left atomic.Int64
}

// NextN returns a Countdown matching the next n ops it is evaluated on.
func NextN(n int64) *Countdown {
	c := &Countdown{}
	c.left.Store(n)
	return c
}

// Evaluate implements Predicate; each true result uses up one of the n.
func (c *Countdown) Evaluate(Op) bool {
	for {
		left := c.left.Load()
		if left <= 0 {
			return false
		}
		if c.left.CompareAndSwap(left, left-1) {
			return true
		}
	}
}

// Remaining returns how many more ops will match.
func (c *Countdown) Remaining() int64 { return max(c.left.Load(), 0) }

// Set makes the next n ops match, replacing what was left.
func (c *Countdown) Set(n int64) { c.left.Store(n) }

// String implements Predicate.
func (c *Countdown) String() string { return fmt.Sprintf("(NextN %d)", c.Remaining()) }

// randomly matches each op with probability p.
type randomly struct {
	p         float64
	seed      uint64
	threshold uint64 // match when the draw is below it
	n         atomic.Uint64
}

// Randomly matches each op it is evaluated on with probability p (clamped
// to [0, 1]). The k-th evaluation's outcome depends only on seed and k, so a
// single-goroutine run is reproducible; it takes no lock.
func Randomly(p float64, seed int64) Predicate {
	p = min(max(p, 0), 1)
	r := &randomly{p: p, seed: uint64(seed), threshold: math.MaxUint64}
	if f := p * 0x1p64; f < 0x1p64 {
		r.threshold = uint64(f)
	}
	return r
}

func (r *randomly) Evaluate(Op) bool {
	if r.p >= 1 {
		return true
	}
	return mix64(r.seed+r.n.Add(1)) < r.threshold
}

func (r *randomly) String() string { return fmt.Sprintf("(Randomly %v %d)", r.p, int64(r.seed)) }

// mix64 is SplitMix64's finalizer: consecutive inputs give independent,
// uniformly spread outputs.
func mix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}
