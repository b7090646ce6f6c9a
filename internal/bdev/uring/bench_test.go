package uring

import (
	"fmt"
	"math/rand/v2"
	"os"
	"sync"
	"testing"
	"unsafe"

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

// registerFixed registers fd as the ring's fixed file 0 and returns a
// read through it (IOSQE_FIXED_FILE): the experiment that decides whether
// fixed files are worth having.
func registerFixed(b *testing.B, r *Ring, fd int) func(p []byte, off int64) (int, error) {
	fds := []int32{int32(fd)}
	const registerFiles, sqeFixedFile = 2, 1 // IORING_REGISTER_FILES, IOSQE_FIXED_FILE
	if _, _, errno := unix.Syscall6(unix.SYS_IO_URING_REGISTER, uintptr(r.fd), registerFiles, uintptr(unsafe.Pointer(&fds[0])), 1, 0, 0); errno != 0 {
		b.Fatalf("IORING_REGISTER_FILES: %v", errno)
	}
	return func(p []byte, off int64) (int, error) {
		e := sqe{opcode: opRead, flags: sqeFixedFile, fd: 0, off: uint64(off), len: uint32(len(p))}
		return r.transfer(&e, p)
	}
}

// BenchmarkRandRead4K reads random 4 KiB blocks of a 64 MiB file with
// pread, through a ring, and through a ring with the file registered
// (fixed), from one goroutine (QD1) and from 32 (QD32): on an O_DIRECT
// file (the device's latency) and on a buffered one whose pages are all
// cached (the path's own cost). enters/op is the io_uring_enter calls
// per read: 1 without batching. Run with -cpu=1 for the daemon's one-CPU
// shape.
func BenchmarkRandRead4K(b *testing.B) {
	for _, file := range []string{"direct", "cached"} {
		for _, qd := range []int{1, 32} {
			for _, engine := range []string{"pread", "ring", "fixed"} {
				b.Run(fmt.Sprintf("%s/%s/QD%d", file, engine, qd), func(b *testing.B) {
					fd, blocks := benchFile(b)
					if file == "cached" {
						fd = reopenBuffered(b, fd)
					}
					read := func(p []byte, off int64) (int, error) { return unix.Pread(fd, p, off) }
					var r *Ring
					if engine != "pread" {
						r = newTestRing(b, qd)
						read = func(p []byte, off int64) (int, error) { return r.Pread(fd, p, off) }
						if engine == "fixed" {
							read = registerFixed(b, r, fd)
						}
					}
					var wg sync.WaitGroup
					var enters uint64
					if r != nil {
						enters = r.enters.Load()
					}
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
					if r != nil {
						b.ReportMetric(float64(r.enters.Load()-enters)/float64(b.N), "enters/op")
					}
				})
			}
		}
	}
}

// reopenBuffered opens fd's file again without O_DIRECT and reads it
// whole, so that every page is cached.
func reopenBuffered(b *testing.B, fd int) int {
	path, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd))
	if err != nil {
		b.Fatal(err)
	}
	bfd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { unix.Close(bfd) })
	buf := make([]byte, 1<<20)
	for off := int64(0); ; off += int64(len(buf)) {
		n, err := unix.Pread(bfd, buf, off)
		if err != nil {
			b.Fatal(err)
		}
		if n == 0 {
			return bfd
		}
	}
}
