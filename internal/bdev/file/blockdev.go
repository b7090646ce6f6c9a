package file

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// blockDevGeometry returns a block device's size in bytes and its logical
// block size.
func blockDevGeometry(fd int) (size int64, logicalBlock uint32, err error) {
	sz, err := unix.IoctlGetUint64(fd, unix.BLKGETSIZE64)
	if err != nil {
		return 0, 0, fmt.Errorf("ioctl BLKGETSIZE64: %w", err)
	}
	lbs, err := unix.IoctlGetInt(fd, unix.BLKSSZGET)
	if err != nil {
		return 0, 0, fmt.Errorf("ioctl BLKSSZGET: %w", err)
	}
	if lbs <= 0 {
		return 0, 0, fmt.Errorf("ioctl BLKSSZGET: logical block size %d", lbs)
	}
	return int64(sz), uint32(lbs), nil
}

// blkDiscard discards length bytes at off on a block device.
func blkDiscard(fd int, off, length int64) error {
	r := [2]uint64{uint64(off), uint64(length)}
	for {
		_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.BLKDISCARD, uintptr(unsafe.Pointer(&r)))
		switch errno {
		case 0:
			return nil
		case unix.EINTR:
			continue
		}
		return errno
	}
}

// dioAlign returns the file's direct-IO offset alignment from statx, or 0
// when the kernel or file system does not report it.
func dioAlign(fd int) uint32 {
	var stx unix.Statx_t
	if err := unix.Statx(fd, "", unix.AT_EMPTY_PATH, unix.STATX_DIOALIGN, &stx); err != nil {
		return 0
	}
	if stx.Mask&unix.STATX_DIOALIGN == 0 {
		return 0
	}
	return stx.Dio_offset_align
}
