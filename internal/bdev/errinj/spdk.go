package errinj

import (
	"fmt"
	"sync"

	"github.com/google/uuid"

	"blockcache/internal/bdev"
)

// SPDKProductName is the product name of an error bdev, as SPDK's.
const SPDKProductName = "Error Injection Disk"

// NewErrorBdev returns SPDK's error bdev over base (bdev_error_create): a
// Device named "EE_" + base's name, with its own UUID (id, or a random one
// when zero), faulted by the returned SPDKInjector. No fault is armed until
// SPDKInjector.Inject is called.
func NewErrorBdev(base bdev.Device, id uuid.UUID) (*Device, *SPDKInjector) {
	if id == uuid.Nil {
		id = uuid.New()
	}
	in := base.Info()
	inj := &SPDKInjector{}
	d := Wrap(base, inj)
	d.info = bdev.Info{Name: "EE_" + in.Name, UUID: id, ProductName: SPDKProductName, BlockSize: in.BlockSize, NumBlocks: in.NumBlocks,
		Abilities: in.Abilities, ReadOnly: in.ReadOnly}
	return d, inj
}

// IOType is the io_type argument of bdev_error_inject_error.
type IOType uint8

// The IO types. IOTypeAll arms every type; IOTypeClear disarms every type.
const (
	IOTypeRead IOType = iota
	IOTypeWrite
	IOTypeFlush
	IOTypeUnmap
	IOTypeAll
	IOTypeClear
	numIOTypes
)

var ioTypeNames = [numIOTypes]string{"read", "write", "flush", "unmap", "all", "clear"}

// String returns SPDK's name for t.
func (t IOType) String() string {
	if t < numIOTypes {
		return ioTypeNames[t]
	}
	return fmt.Sprintf("IOType(%d)", uint8(t))
}

// ParseIOType parses SPDK's name of an io_type: read, write, flush, unmap,
// all or clear.
func ParseIOType(s string) (IOType, error) {
	for t, name := range ioTypeNames {
		if s == name {
			return IOType(t), nil
		}
	}
	return 0, fmt.Errorf("unknown io_type %q (want read, write, flush, unmap, all or clear)", s)
}

// ErrorType is the error_type argument of bdev_error_inject_error.
type ErrorType uint8

// The supported error types. SPDK's "pending" (the IO hangs until a reset
// aborts it) and "nomem" (the IO is retried by the bdev layer) have no
// counterpart here: this device model has neither resets nor NOMEM retries.
// Nor does "nvme" (a chosen NVMe status), or the error_qd threshold.
const (
	// ErrorFailure fails the IO with ErrInjected (EIO).
	ErrorFailure ErrorType = iota + 1
	// ErrorCorruptData lets the IO succeed with one byte of its data XORed
	// (see Corruption); it affects reads and writes only.
	ErrorCorruptData
)

// String returns SPDK's name for t.
func (t ErrorType) String() string {
	switch t {
	case ErrorFailure:
		return "failure"
	case ErrorCorruptData:
		return "corrupt_data"
	}
	return fmt.Sprintf("ErrorType(%d)", uint8(t))
}

// ParseErrorType parses SPDK's name of an error_type; "pending", "nomem" and
// "nvme" are recognised and refused as unsupported.
func ParseErrorType(s string) (ErrorType, error) {
	switch s {
	case "failure":
		return ErrorFailure, nil
	case "corrupt_data":
		return ErrorCorruptData, nil
	case "pending", "nomem", "nvme":
		return 0, fmt.Errorf("error_type %q: %w", s, bdev.ErrNotSupported)
	}
	return 0, fmt.Errorf("unknown error_type %q (want failure or corrupt_data)", s)
}

// InjectOpts are the arguments of bdev_error_inject_error. The RPC's
// num_errors defaults to 1; here Num is taken as given.
type InjectOpts struct {
	IOType        IOType
	ErrorType     ErrorType
	Num           uint32 // how many IOs of the type to fault
	CorruptOffset uint64 // ErrorCorruptData: byte of the IO's buffer to damage
	CorruptValue  uint8  // ErrorCorruptData: XOR mask; must not be zero
}

// spdkRule is the armed fault of one IO type, SPDK's vbdev_error_info.
type spdkRule struct {
	errType ErrorType
	left    uint32
	corrupt Corruption
}

// SPDKInjector is an Injector with the semantics of SPDK's error bdev: for
// each of read, write, flush and unmap (discard) it holds at most one armed
// fault that hits the next Num IOs of that type. Write-zeroes is never
// faulted, as in SPDK. It is safe for concurrent use.
type SPDKInjector struct {
	mu    sync.Mutex
	rules [IOTypeAll]spdkRule // by IOType; guarded by mu
}

// Inject arms (or, with IOTypeClear, disarms) faults, as
// bdev_error_inject_error: a new fault for a type replaces the old one.
func (s *SPDKInjector) Inject(o InjectOpts) error {
	if o.IOType >= numIOTypes {
		return fmt.Errorf("inject error: unknown io_type %v", o.IOType)
	}
	if o.IOType != IOTypeClear {
		switch o.ErrorType {
		case ErrorFailure:
		case ErrorCorruptData:
			if o.CorruptValue == 0 {
				return fmt.Errorf("inject error: corrupt_value must not be zero (XOR with 0 changes nothing)")
			}
			if o.CorruptOffset > 1<<62 {
				return fmt.Errorf("inject error: corrupt_offset %d out of range", o.CorruptOffset)
			}
		default:
			return fmt.Errorf("inject error: unsupported error_type %v", o.ErrorType)
		}
	}
	rule := spdkRule{errType: o.ErrorType, left: o.Num, corrupt: Corruption{Offset: int64(o.CorruptOffset), Mask: o.CorruptValue}}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch o.IOType {
	case IOTypeAll:
		for i := range s.rules {
			s.rules[i] = rule
		}
	case IOTypeClear:
		for i := range s.rules {
			s.rules[i].left = 0
		}
	default:
		s.rules[o.IOType] = rule
	}
	return nil
}

// Remaining returns how many more IOs of type t (read, write, flush or
// unmap) will be faulted.
func (s *SPDKInjector) Remaining(t IOType) uint32 {
	if t >= IOTypeAll {
		return 0
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rules[t].left
}

// MaybeError implements Injector.
func (s *SPDKInjector) MaybeError(op Op) error {
	var t IOType
	switch op.Kind {
	case OpRead:
		t = IOTypeRead
	case OpWrite:
		t = IOTypeWrite
	case OpFlush:
		t = IOTypeFlush
	case OpDiscard:
		t = IOTypeUnmap
	default:
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	r := &s.rules[t]
	if r.left == 0 {
		return nil
	}
	r.left--
	if r.errType == ErrorCorruptData {
		c := r.corrupt
		return &c
	}
	return ErrInjected
}
