package bdevtest

import (
	"math/rand/v2"
	"sync"
	"sync/atomic"

	"blockcache/internal/bdev"
)

// Writers are goroutines that write 4 KiB blocks of a device at random,
// each over a region of its own within the first span blocks, until stopped
// or until one of their writes fails (a goroutine stops at its first
// failure). Each block is filled with one byte, different from write to
// write. They remember each block's last acknowledged write and, for a
// block whose last write failed, that write too: it may or may not have
// reached the device. Tests of what must work under sustained writes (a
// flush, a delete) check the device against them afterwards.
type Writers struct {
	// Writes counts the acknowledged writes.
	Writes atomic.Int64

	stop     chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup

	mu     sync.Mutex
	acked  map[int64]byte // block offset -> fill byte of its last acknowledged write
	failed map[int64]byte // block offset -> fill byte of its last write, when it failed
	errs   []error
}

// WriterBlock is the size of the Writers' writes.
const WriterBlock = 4096

// StartWriters starts n writers on the first span blocks of dev; seed
// chooses their offsets.
func StartWriters(dev bdev.Device, n, span int, seed uint64) *Writers {
	w := &Writers{stop: make(chan struct{}), acked: map[int64]byte{}, failed: map[int64]byte{}}
	per := span / n
	for g := range n {
		w.wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), seed))
			buf := make([]byte, WriterBlock)
			for seq := 1; ; seq++ {
				select {
				case <-w.stop:
					return
				default:
				}
				off := int64(g*per+rng.IntN(per)) * WriterBlock
				fill := byte(seq%250 + 1)
				for i := range buf {
					buf[i] = fill
				}
				err := dev.WriteAt(buf, off, false)
				w.mu.Lock()
				if err != nil {
					w.failed[off] = fill
					w.errs = append(w.errs, err)
					w.mu.Unlock()
					return
				}
				w.acked[off] = fill
				delete(w.failed, off)
				w.mu.Unlock()
				w.Writes.Add(1)
			}
		})
	}
	return w
}

// Stop stops the writers, waits for them and returns the errors of the
// writes that failed. It may be called more than once.
func (w *Writers) Stop() []error {
	w.stopOnce.Do(func() { close(w.stop) })
	w.wg.Wait()
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.errs
}

// Last returns the fill byte of the last acknowledged write of the block at
// off (ok false if none), and of the write after it if that one failed
// (hasFailed).
func (w *Writers) Last(off int64) (acked byte, ok bool, failed byte, hasFailed bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	acked, ok = w.acked[off]
	failed, hasFailed = w.failed[off]
	return acked, ok, failed, hasFailed
}

// Acked returns a copy of the blocks written: offset -> fill byte of the
// last acknowledged write.
func (w *Writers) Acked() map[int64]byte {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make(map[int64]byte, len(w.acked))
	for k, v := range w.acked {
		out[k] = v
	}
	return out
}
