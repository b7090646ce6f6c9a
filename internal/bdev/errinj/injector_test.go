package errinj_test

import (
	"errors"
	"fmt"
	"testing"

	"blockcache/internal/bdev/errinj"
)

func TestErrInjected(t *testing.T) {
	wrapped := fmt.Errorf("outer: %w", fmt.Errorf("inner: %w", errinj.ErrInjected))
	if !errors.Is(wrapped, errinj.ErrInjected) {
		t.Fatal("errors.Is does not find ErrInjected through wrapping")
	}
	if errinj.ErrInjected.Error() != "injected error" || errinj.ErrInjected.String() != "ErrInjected" {
		t.Fatalf("Error %q String %q", errinj.ErrInjected.Error(), errinj.ErrInjected.String())
	}
	other := errinj.Label("ErrOther", errors.New("injected error"))
	if errors.Is(other, errinj.ErrInjected) || errors.Is(fmt.Errorf("x: %w", errinj.ErrInjected), other) {
		t.Fatal("two labelled errors with the same message compare equal")
	}
	if err := errinj.ErrInjected.MaybeError(read0); err != errinj.ErrInjected {
		t.Fatalf("MaybeError = %v", err)
	}
}

func TestIf(t *testing.T) {
	inj := errinj.ErrInjected.If(errinj.Writes())
	for _, op := range allOps {
		err := inj.MaybeError(op)
		if want := op.Kind == errinj.OpWrite; (err != nil) != want || (err != nil && !errors.Is(err, errinj.ErrInjected)) {
			t.Errorf("If(Writes) on %v = %v", op, err)
		}
	}
	if s := fmt.Sprint(inj); s != "(injected error (Kind write))" {
		t.Errorf("String = %q", s)
	}
}

func TestAny(t *testing.T) {
	errA := errinj.Label("A", errors.New("a"))
	errB := errinj.Label("B", errors.New("b"))
	later := errinj.NextN(1)
	inj := errinj.Any(errA.If(errinj.Reads()), errB.If(errinj.Or(errinj.Reads(), errinj.Writes())), errB.If(later))
	tests := []struct {
		op   errinj.Op
		want error
	}{
		{read0, errA},   // first match wins
		{write4k, errB}, // second
		{flush, errB},   // third: the countdown is only reached here
		{flush, nil},    // used up
	}
	for _, tc := range tests {
		if got := inj.MaybeError(tc.op); got != tc.want {
			t.Errorf("Any on %v = %v, want %v", tc.op, got, tc.want)
		}
	}
	if errinj.Any().MaybeError(read0) != nil {
		t.Error("empty Any injected")
	}
}

func TestToggle(t *testing.T) {
	tog := &errinj.Toggle{Injector: errinj.ErrInjected}
	if tog.Enabled() || tog.MaybeError(read0) != nil {
		t.Fatal("zero Toggle injects")
	}
	tog.On()
	if !tog.Enabled() || tog.MaybeError(read0) == nil {
		t.Fatal("Toggle on does not inject")
	}
	tog.Off()
	if tog.MaybeError(read0) != nil {
		t.Fatal("Toggle off injects")
	}
}

func TestCounter(t *testing.T) {
	c := &errinj.Counter{Injector: errinj.ErrInjected.If(errinj.Reads())}
	for _, op := range append(allOps, read0, read0) {
		c.MaybeError(op)
	}
	if c.Load() != 3 {
		t.Fatalf("Counter = %d, want 3", c.Load())
	}
	fn := errinj.InjectorFunc(func(op errinj.Op) error {
		if op.Len > 4096 {
			return errinj.ErrInjected
		}
		return nil
	})
	c = &errinj.Counter{Injector: fn}
	for _, op := range allOps {
		c.MaybeError(op)
	}
	if c.Load() != 1 {
		t.Fatalf("Counter over InjectorFunc = %d, want 1", c.Load())
	}
}

func TestOpStrings(t *testing.T) {
	tests := map[fmt.Stringer]string{
		read0:             "read 0+4096",
		flush:             "flush",
		zeroes1m:          "write-zeroes 1048576+1048576",
		errinj.OpDiscard:  "discard",
		errinj.OpKind(42): "OpKind(42)",
	}
	for v, want := range tests {
		if got := v.String(); got != want {
			t.Errorf("String = %q, want %q", got, want)
		}
	}
	c := &errinj.Corruption{Offset: 3, Mask: 1}
	if got := c.Error(); got != "corrupt byte 3 with mask 0x01" {
		t.Errorf("Corruption.Error = %q", got)
	}
}
