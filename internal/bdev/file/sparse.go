package file

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// CreateSparse creates path as a sparse file of size bytes, which reads as
// zeroes and takes no space until written. It fails with an error wrapping
// os.ErrExist if path exists, so it never clobbers data.
func CreateSparse(path string, size int64) error {
	if size <= 0 {
		return fmt.Errorf("create sparse file %s: size %d is not positive", path, size)
	}
	fd, err := openRetry(path, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC)
	if err != nil {
		return &os.PathError{Op: "create sparse file", Path: path, Err: err}
	}
	err = unix.Ftruncate(fd, size)
	if cerr := unix.Close(fd); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return &os.PathError{Op: "create sparse file", Path: path, Err: err}
	}
	return nil
}

// openRetry opens path, retrying on EINTR.
func openRetry(path string, flags int) (int, error) {
	for {
		fd, err := unix.Open(path, flags, 0o644)
		if err != unix.EINTR {
			return fd, err
		}
	}
}
