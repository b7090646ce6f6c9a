// Package devid names the storage behind a file or block device in a way
// that survives renaming a bdev and renumbering the host's disks, so that
// a cache can tell its core device apart from another one of the same name
// and size (see bdev.Identifier).
//
// Identities are short strings with a kind prefix:
//
//	file:<st_dev major>:<minor>:<inode>   a regular file
//	by-id:<name>                          a block device with a /dev/disk/by-id link
//	wwid:<wwid>, serial:<serial>          a block device's id from sysfs
//	dm-uuid:<uuid>                        a device-mapper device (LVM, crypt)
//	loop:<identity of the backing file>   a loop device
//	<disk identity>:part<N>               partition N of a disk
//
// An empty identity means unknown.
package devid

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// File is the identity of a regular file on device dev (st_dev) with inode
// ino.
func File(dev, ino uint64) string {
	return fmt.Sprintf("file:%d:%d:%d", unix.Major(dev), unix.Minor(dev), ino)
}

// FromStat returns the identity of what st describes: a regular file or a
// block device; "" for anything else or a block device without a stable
// id.
func FromStat(st *unix.Stat_t) string {
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		return File(st.Dev, st.Ino)
	case unix.S_IFBLK:
		return Host.Block(st.Rdev)
	}
	return ""
}

// Resolver finds block device identities under a root of the device tree.
type Resolver struct {
	// ByIDDir holds the by-id links (/dev/disk/by-id), each a symlink to
	// the kernel name of a block device.
	ByIDDir string
	// SysDir holds one entry per block device named major:minor
	// (/sys/dev/block).
	SysDir string
}

// Host resolves identities on the running system.
var Host = Resolver{ByIDDir: "/dev/disk/by-id", SysDir: "/sys/dev/block"}

// Block returns the identity of the block device rdev (st_rdev), "" when
// it has no stable id. It prefers a /dev/disk/by-id name (the first in
// sorted order, so the choice is the same on every call), then sysfs: a
// device-mapper uuid, a loop device's backing file, the wwid or serial;
// for a partition, the disk's identity with the partition number.
func (r Resolver) Block(rdev uint64) string {
	sys := filepath.Join(r.SysDir, fmt.Sprintf("%d:%d", unix.Major(rdev), unix.Minor(rdev)))
	real, err := filepath.EvalSymlinks(sys)
	if err != nil {
		return ""
	}
	if id := r.byID(filepath.Base(real)); id != "" {
		return id
	}
	if part := readTrimmed(filepath.Join(real, "partition")); part != "" {
		disk := r.sysID(filepath.Dir(real))
		if disk == "" {
			return ""
		}
		return disk + ":part" + part
	}
	return r.sysID(real)
}

// byID returns "by-id:<name>" for the first by-id link to kernel name
// kname, or "".
func (r Resolver) byID(kname string) string {
	ents, err := os.ReadDir(r.ByIDDir)
	if err != nil {
		return ""
	}
	names := make([]string, 0, len(ents))
	for _, e := range ents {
		names = append(names, e.Name())
	}
	slices.Sort(names)
	for _, n := range names {
		target, err := os.Readlink(filepath.Join(r.ByIDDir, n))
		if err == nil && filepath.Base(target) == kname {
			return "by-id:" + n
		}
	}
	return ""
}

// sysID reads a whole device's id from its sysfs directory dir.
func (r Resolver) sysID(dir string) string {
	if v := readTrimmed(filepath.Join(dir, "dm", "uuid")); v != "" {
		return "dm-uuid:" + v
	}
	if v := readTrimmed(filepath.Join(dir, "loop", "backing_file")); v != "" {
		var st unix.Stat_t
		if unix.Stat(v, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
			return ""
		}
		return "loop:" + File(st.Dev, st.Ino)
	}
	for _, f := range []string{"wwid", "device/wwid"} {
		if v := readTrimmed(filepath.Join(dir, f)); v != "" {
			return "wwid:" + v
		}
	}
	for _, f := range []string{"serial", "device/serial"} {
		if v := readTrimmed(filepath.Join(dir, f)); v != "" {
			return "serial:" + v
		}
	}
	return ""
}

// readTrimmed returns a small sysfs attribute without surrounding space,
// "" if it cannot be read.
func readTrimmed(path string) string {
	b, err := os.ReadFile(path)
	if err != nil || len(b) > 4096 {
		return ""
	}
	return strings.TrimSpace(string(b))
}
