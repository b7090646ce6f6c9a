package file

import (
	"fmt"
	"io"

	"golang.org/x/sys/unix"

	"blockcache/internal/bdev"
)

// openExclusive opens path, which must be a regular file or a block device,
// and takes it for the caller alone: a block device is opened with O_EXCL,
// which Linux refuses while it is mounted or opened exclusively elsewhere,
// and either kind is locked over its whole length with an open file
// description lock, a write lock or, with readOnly, a read lock. Such a
// lock conflicts with any other open file description's, in this process or
// another, and is what qemu and qemu-nbd take and test (at single bytes), so
// each refuses the other's files. The lock goes when the fd is closed.
//
// Anything else (a FIFO, a socket, a character device, a directory) is
// refused without being opened, and the open itself is non-blocking, so
// that a FIFO put in the path's place meanwhile cannot hang it.
func openExclusive(path string, flags int, readOnly bool) (int, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return -1, fmt.Errorf("stat: %w", err)
	}
	if err := checkKind(st.Mode); err != nil {
		return -1, err
	}
	blockDev := st.Mode&unix.S_IFMT == unix.S_IFBLK
	flags |= unix.O_NONBLOCK | unix.O_NOCTTY
	if blockDev {
		flags |= unix.O_EXCL
	}
	fd, err := openRetry(path, flags)
	if err != nil {
		if blockDev && err == unix.EBUSY {
			return -1, inUse(path, true, st.Dev, st.Ino)
		}
		return -1, err
	}
	if err := takeOpened(fd, path, readOnly, blockDev); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// takeOpened checks that fd is still the kind of file path was, makes it
// blocking again and locks it.
func takeOpened(fd int, path string, readOnly, blockDev bool) error {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("fstat: %w", err)
	}
	if err := checkKind(st.Mode); err != nil {
		return err
	}
	if (st.Mode&unix.S_IFMT == unix.S_IFBLK) != blockDev {
		return fmt.Errorf("replaced by another kind of file while being opened: %w", bdev.ErrInvalidIO)
	}
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err == nil {
		_, err = unix.FcntlInt(uintptr(fd), unix.F_SETFL, fl&^unix.O_NONBLOCK)
	}
	if err != nil {
		return fmt.Errorf("clear O_NONBLOCK: %w", err)
	}
	if err := lockWhole(fd, !readOnly); err != nil {
		if err == unix.EAGAIN || err == unix.EACCES {
			return inUse(path, blockDev, st.Dev, st.Ino)
		}
		return fmt.Errorf("lock (F_OFD_SETLK): %w", err)
	}
	return nil
}

// lockWhole takes an open file description lock, a write lock or a read
// lock, over the whole of fd's file, without waiting. It fails with EAGAIN
// or EACCES when another open file description holds a conflicting lock.
func lockWhole(fd int, write bool) error {
	lk := unix.Flock_t{Type: unix.F_RDLCK, Whence: io.SeekStart, Start: 0, Len: 0} // Len 0: to the end, however far it grows
	if write {
		lk.Type = unix.F_WRLCK
	}
	for {
		if err := unix.FcntlFlock(uintptr(fd), unix.F_OFD_SETLK, &lk); err != unix.EINTR {
			return err
		}
	}
}

// inUse is the error for a busy path, naming its holders when they can be
// found.
func inUse(path string, blockDev bool, dev, ino uint64) error {
	return &inUseError{path: path, holder: lockHolders(dev, ino), blockDev: blockDev}
}

// checkKind refuses every file type but a regular file and a block device,
// naming the type.
func checkKind(mode uint32) error {
	var kind string
	switch mode & unix.S_IFMT {
	case unix.S_IFREG, unix.S_IFBLK:
		return nil
	case unix.S_IFIFO:
		kind = "a FIFO"
	case unix.S_IFSOCK:
		kind = "a socket"
	case unix.S_IFCHR:
		kind = "a character device"
	case unix.S_IFDIR:
		kind = "a directory"
	case unix.S_IFLNK:
		kind = "a symbolic link"
	default:
		kind = fmt.Sprintf("a file of type %#o", mode&unix.S_IFMT)
	}
	return fmt.Errorf("%s, not a regular file or block device: %w", kind, bdev.ErrInvalidIO)
}
