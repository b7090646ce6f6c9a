package uring

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// benchFile is a 64 MiB file under dir, written whole (so reads reach the
// device, not holes), opened with O_DIRECT.
func benchFile(b *testing.B) (fd int, blocks int) {
	const size = 64 << 20
	fd = tempFile(b, b.TempDir(), "bench.img", 0, unix.O_DIRECT)
	chunk := alignedBuf(1 << 20)
	for i := range chunk {
		chunk[i] = byte(i*7 + 1)
	}
	for off := int64(0); off < size; off += int64(len(chunk)) {
		if _, err := unix.Pwrite(fd, chunk, off); err != nil {
			b.Fatal(err)
		}
	}
	if err := unix.Fdatasync(fd); err != nil {
		b.Fatal(err)
	}
	return fd, size / 4096
}

// BenchmarkRandRead4K reads random 4 KiB blocks of an O_DIRECT file with
// pread and through a ring, from one goroutine (QD1) and from 32 (QD32).
func BenchmarkRandRead4K(b *testing.B) {
	for _, qd := range []int{1, 32} {
		for _, engine := range []string{"pread", "ring"} {
			b.Run(fmt.Sprintf("%s/QD%d", engine, qd), func(b *testing.B) {
				fd, blocks := benchFile(b)
				read := func(p []byte, off int64) (int, error) { return unix.Pread(fd, p, off) }
				if engine == "ring" {
					r := newTestRing(b, qd)
					read = func(p []byte, off int64) (int, error) { return r.Pread(fd, p, off) }
				}
				var wg sync.WaitGroup
				per := b.N / qd
				b.ReportAllocs()
				b.ResetTimer()
				for g := range qd {
					n := per
					if g == 0 {
						n += b.N % qd
					}
					wg.Go(func() {
						buf := alignedBuf(4096)
						rng := rand.New(rand.NewPCG(uint64(g), 1))
						for range n {
							if _, err := read(buf, int64(rng.IntN(blocks))*4096); err != nil {
								b.Error(err)
								return
							}
						}
					})
				}
				wg.Wait()
			})
		}
	}
}
