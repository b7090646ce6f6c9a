package nbd

import (
	"math/bits"
	"sync"
	"sync/atomic"

	"blockcache/internal/aligned"
)

// Payload buffers come in power-of-two size classes from 4 KiB to
// maxPayloadBytes, and go back to free lists bounded in bytes, so that a
// steady stream of requests of similar sizes allocates nothing, yet what a
// burst (or an abusive client) made the server allocate is let go once it
// is over: at most maxPooledBytes stay.
const (
	minBufShift = 12 // 4 KiB
	maxBufShift = 25 // 32 MiB == maxPayloadBytes

	// maxPooledBytes bounds the free buffers of all classes together.
	maxPooledBytes = 32 << 20
	// maxPooledClassBytes bounds the free buffers of one class; the 16 and
	// 32 MiB classes, larger than it, are never kept.
	maxPooledClassBytes = 8 << 20
)

// bufferPool hands out byte slices of at most maxPayloadBytes. It is safe
// for concurrent use. The lists hold *[]byte, as jobs do, so that neither
// get nor put allocates.
type bufferPool struct {
	pooled  atomic.Int64 // bytes in the free lists, or about to be; at most maxPooledBytes
	dropped atomic.Int64 // bytes put and let go to the GC since the last takeDropped

	classes [maxBufShift - minBufShift + 1]bufferClass
}

// bufferClass is the free list of one size class. Each sits on its own
// CPU cache lines, since requests of different sizes run concurrently.
type bufferClass struct {
	mu   sync.Mutex
	free []*[]byte
	_    [64 - 32]byte
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
	k := &p.classes[c]
	k.mu.Lock()
	if last := len(k.free) - 1; last >= 0 {
		b := k.free[last]
		k.free[last] = nil
		k.free = k.free[:last]
		k.mu.Unlock()
		p.pooled.Add(-int64(cap(*b)))
		*b = (*b)[:n]
		return b
	}
	k.mu.Unlock()
	b := aligned.Bytes(1<<(c+minBufShift), aligned.Page)[:n] // direct IO uses it without a bounce
	return &b
}

// put returns b to its class's free list, or lets the GC have it when the
// lists are full. b must have come from get and not be used afterwards.
func (p *bufferPool) put(b *[]byte) {
	size := cap(*b)
	c := classOf(size)
	if size != 1<<(c+minBufShift) {
		return // not one of ours
	}
	if size <= maxPooledClassBytes && p.reserve(int64(size)) {
		k := &p.classes[c]
		k.mu.Lock()
		if (len(k.free)+1)*size <= maxPooledClassBytes {
			k.free = append(k.free, b)
			k.mu.Unlock()
			return
		}
		k.mu.Unlock()
		p.pooled.Add(-int64(size))
	}
	p.dropped.Add(int64(size))
}

// reserve counts n more bytes as pooled if that stays within
// maxPooledBytes.
func (p *bufferPool) reserve(n int64) bool {
	for {
		u := p.pooled.Load()
		if u+n > maxPooledBytes {
			return false
		}
		if p.pooled.CompareAndSwap(u, u+n) {
			return true
		}
	}
}

// takeDropped returns the bytes let go since the last call and restarts
// the count.
func (p *bufferPool) takeDropped() int64 { return p.dropped.Swap(0) }
