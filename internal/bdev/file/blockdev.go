package file

import (
	"fmt"
	"os"
	"strconv"
	"strings"
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

// queueDiscards reports whether the block device numbered rdev takes
// discards: whether its request queue's discard_max_bytes in sysfs is not 0.
// A partition has no queue of its own and shares its disk's, one directory
// up. When sysfs cannot tell (not mounted, a device without a queue
// directory) it reports true and leaves the answer to BLKDISCARD.
func queueDiscards(rdev uint64) bool {
	dir := fmt.Sprintf("/sys/dev/block/%d:%d", unix.Major(rdev), unix.Minor(rdev))
	for _, p := range []string{dir + "/queue/discard_max_bytes", dir + "/../queue/discard_max_bytes"} {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
		return err != nil || n > 0
	}
	return true
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
