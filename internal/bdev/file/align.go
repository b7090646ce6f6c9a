package file

import (
	"fmt"

	"golang.org/x/sys/unix"

	"blockcache/internal/aligned"
)

// maxBounceBytes bounds a bounce buffer; larger unaligned IO is done in
// pieces of whole blocks.
const maxBounceBytes = 1 << 20

// maxPooledBounce bounds the bounce buffers a device keeps between IOs.
// More unaligned IOs at once each allocate one, let go when they end, so
// that a burst leaves at most maxPooledBounce*maxBounceBytes behind.
const maxPooledBounce = 4

// bouncePool hands out aligned bounce buffers of one size. Get and put
// allocate nothing while no more than maxPooledBounce are out at once.
type bouncePool struct {
	size int
	free chan *[]byte
}

func newBouncePool(size int) *bouncePool {
	return &bouncePool{size: size, free: make(chan *[]byte, maxPooledBounce)}
}

// get returns a buffer of p.size bytes aligned to aligned.Page.
func (p *bouncePool) get() *[]byte {
	select {
	case b := <-p.free:
		return b
	default:
		b := aligned.Bytes(p.size, aligned.Page)
		return &b
	}
}

// put gives b back, or lets the GC have it when the pool is full.
func (p *bouncePool) put(b *[]byte) {
	select {
	case p.free <- b:
	default:
	}
}

// memAlignment is the buffer address alignment direct IO on fd needs:
// statx's STATX_DIOALIGN memory alignment where the kernel reports it (512
// on most file systems), else a page, which satisfies every device.
func memAlignment(fd int) int {
	var stx unix.Statx_t
	if err := unix.Statx(fd, "", unix.AT_EMPTY_PATH, unix.STATX_DIOALIGN, &stx); err != nil ||
		stx.Mask&unix.STATX_DIOALIGN == 0 || stx.Dio_mem_align == 0 || stx.Dio_mem_align&(stx.Dio_mem_align-1) != 0 {
		return aligned.Page
	}
	return int(min(stx.Dio_mem_align, aligned.Page))
}

// directTooCoarse returns why direct IO cannot serve blocks of blockSize
// bytes (512 if 0) on fd, a regular file whose file system needs a coarser
// direct-IO offset alignment, or nil. Block devices are never too coarse:
// their logical block size is their minimum block size either way.
func directTooCoarse(fd int, blockSize uint32) error {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil
	}
	want := max(blockSize, 512)
	if a := dioAlign(fd); a > 0 && want%a != 0 {
		return fmt.Errorf("direct IO on this file system needs %d-byte alignment, coarser than the %d-byte block size", a, want)
	}
	return nil
}
