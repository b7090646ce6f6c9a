// Package aligned allocates byte slices whose first byte sits on a
// power-of-two boundary, as O_DIRECT IO needs of its buffers.
package aligned

import (
	"fmt"
	"unsafe"
)

// Page is the alignment that satisfies every device's direct-IO memory
// alignment on Linux: a page.
const Page = 4096

// Bytes returns a zeroed slice of length and capacity n whose first byte is
// a multiple of align, a power of two. The Go allocator already places
// most slices of a page or more on a page boundary; those are returned as
// allocated, and only others are over-allocated by align bytes and sliced.
func Bytes(n, align int) []byte {
	if n <= 0 {
		return nil
	}
	if align&(align-1) != 0 || align <= 0 {
		panic(fmt.Errorf("aligned: alignment %d is not a power of two", align))
	}
	b := make([]byte, n)
	if Is(b, align) {
		return b
	}
	b = make([]byte, n+align)
	skip := (align - int(uintptr(unsafe.Pointer(&b[0]))&uintptr(align-1))) & (align - 1)
	return b[skip : skip+n : skip+n]
}

// Is reports whether p's first byte is a multiple of align, a power of two.
// An empty slice is aligned.
func Is(p []byte, align int) bool {
	return uintptr(unsafe.Pointer(unsafe.SliceData(p)))&uintptr(align-1) == 0
}
