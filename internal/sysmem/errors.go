package sysmem

import (
	"errors"
	"fmt"
	"syscall"
)

// ErrNotEnough marks a *ShortError: the memory asked for is more than the
// process can get.
var ErrNotEnough = errors.New("not enough memory")

// ShortError reports a request for more memory than is available. It
// matches ErrNotEnough and syscall.ENOMEM with errors.Is and errors.As.
type ShortError struct {
	Need      int64
	Available Available
}

func (e *ShortError) Error() string {
	return fmt.Sprintf("%d bytes requested, %d available (%s): %v", e.Need, e.Available.Bytes, e.Available.Source, ErrNotEnough)
}

// Unwrap gives ErrNotEnough and ENOMEM, the errno callers report.
func (e *ShortError) Unwrap() []error { return []error{ErrNotEnough, syscall.ENOMEM} }
