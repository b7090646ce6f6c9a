package errinj

import (
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
)

// Injector decides, before each device call, whether the call fails.
// MaybeError returns nil to let the call through, a *Corruption to let it
// through with damaged data, or the error to fail it with. Injectors are
// called concurrently by concurrent IO and must be safe for that.
type Injector interface {
	MaybeError(op Op) error
}

// InjectorFunc adapts a function to Injector.
type InjectorFunc func(Op) error

// MaybeError implements Injector.
func (f InjectorFunc) MaybeError(op Op) error { return f(op) }

// LabelledError is an error with a short label naming it in test output. It
// is comparable, so errors.Is finds it through any wrapping.
type LabelledError struct {
	err   error
	label string
}

// ErrInjected is the error injected by default. A device returns it inside
// a *bdev.IOError that also wraps syscall.EIO, so bdev.Errno gives EIO.
var ErrInjected = Label("ErrInjected", errors.New("injected error"))

// Label returns err labelled as label.
func Label(label string, err error) LabelledError { return LabelledError{err: err, label: label} }

// Error implements error with the wrapped error's message.
func (le LabelledError) Error() string { return le.err.Error() }

// Unwrap returns the labelled error.
func (le LabelledError) Unwrap() error { return le.err }

// String returns the label.
func (le LabelledError) String() string { return le.label }

// MaybeError implements Injector: it always injects le.
func (le LabelledError) MaybeError(Op) error { return le }

// If returns an Injector that injects le into the ops p holds for.
func (le LabelledError) If(p Predicate) Injector { return &conditional{err: le, pred: p} }

// conditional injects err when pred holds.
type conditional struct {
	err  error
	pred Predicate
}

func (c *conditional) MaybeError(op Op) error {
	if c.pred.Evaluate(op) {
		return c.err
	}
	return nil
}

func (c *conditional) String() string { return fmt.Sprintf("(%v %v)", c.err, c.pred) }

// Any returns an Injector that asks each of injectors in turn and injects the
// first fault one of them returns. Later injectors are not asked then, so
// their counters (OnIndex, NextN, ...) do not advance.
func Any(injectors ...Injector) Injector { return anyInjector(injectors) }

type anyInjector []Injector

func (a anyInjector) MaybeError(op Op) error {
	for _, inj := range a {
		if err := inj.MaybeError(op); err != nil {
			return err
		}
	}
	return nil
}

func (a anyInjector) String() string {
	parts := make([]string, len(a))
	for i, inj := range a {
		parts[i] = fmt.Sprint(inj)
	}
	return "(Any " + strings.Join(parts, " ") + ")"
}

// Toggle switches an Injector on and off at run time. The zero Toggle is
// off: &Toggle{Injector: inj} injects nothing until On is called.
type Toggle struct {
	Injector
	on atomic.Bool
}

// On lets the wrapped injector inject.
func (t *Toggle) On() { t.on.Store(true) }

// Off stops all injection.
func (t *Toggle) Off() { t.on.Store(false) }

// Enabled reports whether t is on.
func (t *Toggle) Enabled() bool { return t.on.Load() }

// MaybeError implements Injector.
func (t *Toggle) MaybeError(op Op) error {
	if !t.on.Load() {
		return nil
	}
	return t.Injector.MaybeError(op)
}

// Counter counts the faults its Injector injects.
type Counter struct {
	Injector
	n atomic.Int64
}

// MaybeError implements Injector.
func (c *Counter) MaybeError(op Op) error {
	err := c.Injector.MaybeError(op)
	if err != nil {
		c.n.Add(1)
	}
	return err
}

// Load returns the number of faults injected so far.
func (c *Counter) Load() int64 { return c.n.Load() }
