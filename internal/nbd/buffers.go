package nbd

import (
	"math/bits"
	"sync"
)

// Payload buffers come from pools in power-of-two size classes from
// 4 KiB to maxPayloadBytes, so a steady stream of requests of similar
// sizes allocates nothing.
const (
	minBufShift = 12 // 4 KiB
	maxBufShift = 25 // 32 MiB == maxPayloadBytes
)

// bufferPool hands out byte slices of at most maxPayloadBytes. It is safe
// for concurrent use. The pools hold *[]byte so that Put does not allocate.
type bufferPool struct {
	classes [maxBufShift - minBufShift + 1]sync.Pool
}

// classOf returns the index of the smallest class holding n bytes.
func classOf(n int) int {
	if n <= 1<<minBufShift {
		return 0
	}
	return bits.Len(uint(n-1)) - minBufShift
}

// get returns a buffer of length n (0 < n <= maxPayloadBytes). Its contents
// are unspecified.
func (p *bufferPool) get(n int) *[]byte {
	c := classOf(n)
	if b, ok := p.classes[c].Get().(*[]byte); ok {
		*b = (*b)[:n]
		return b
	}
	b := make([]byte, n, 1<<(c+minBufShift))
	return &b
}

// put returns b to its class. b must have come from get.
func (p *bufferPool) put(b *[]byte) {
	c := classOf(cap(*b))
	if cap(*b) != 1<<(c+minBufShift) {
		return // not one of ours; let the GC have it
	}
	p.classes[c].Put(b)
}
