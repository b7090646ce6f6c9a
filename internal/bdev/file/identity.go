package file

import (
	"golang.org/x/sys/unix"

	"blockcache/internal/bdev/devid"
)

// Identity implements bdev.Identifier: "file:<major>:<minor>:<inode>" for a
// regular file, a stable id for a block device (see package devid), "" if
// the device is closed or has none.
func (d *Device) Identity() string {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.fd < 0 {
		return ""
	}
	var st unix.Stat_t
	if err := unix.Fstat(d.fd, &st); err != nil {
		return ""
	}
	return devid.FromStat(&st)
}
