package file

import "unsafe"

// memAlign is the buffer address alignment Direct IO is given: a page, which
// satisfies every device's direct-IO memory alignment.
const memAlign = 4096

// maxBounceBytes bounds a bounce buffer; larger unaligned IO is done in
// pieces of whole blocks.
const maxBounceBytes = 1 << 20

// alignedBuf returns n bytes starting at a memAlign boundary.
func alignedBuf(n int) []byte {
	b := make([]byte, n+memAlign)
	skip := (memAlign - int(uintptr(unsafe.Pointer(&b[0]))%memAlign)) % memAlign
	return b[skip : skip+n : skip+n]
}

// isAligned reports whether p starts at a memAlign boundary.
func isAligned(p []byte) bool {
	return uintptr(unsafe.Pointer(unsafe.SliceData(p)))%memAlign == 0
}
