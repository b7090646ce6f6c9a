package daemon

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// LockFileName is the lock file inside the data directory. A daemon holds
// an open file description write lock on it from before it touches the
// directory until it has closed every device; the file holds its pid.
const LockFileName = "blockcache.lock"

// ErrDataDirInUse is wrapped by New's error when another daemon holds the
// data directory.
var ErrDataDirInUse = errors.New("data directory in use")

// dirInUseError names the busy data directory and the pid its lock file
// gives.
type dirInUseError struct {
	dir string
	pid int // 0 when the lock file holds no pid yet
}

func (e *dirInUseError) Error() string {
	if e.pid == 0 {
		return fmt.Sprintf("data directory %s is in use by another blockcache (it holds %s)", e.dir, filepath.Join(e.dir, LockFileName))
	}
	return fmt.Sprintf("data directory %s is in use by blockcache pid %d", e.dir, e.pid)
}

func (e *dirInUseError) Unwrap() error { return ErrDataDirInUse }

// dirLock is a daemon's hold on its data directory. The lock is tied to the
// open file description, so it also goes when the process dies.
type dirLock struct {
	f *os.File
}

// lockDataDir creates dir if needed and takes its lock without waiting,
// writing this process's pid into the lock file.
func lockDataDir(dir string) (*dirLock, error) {
	if err := os.MkdirAll(dir, dataDirMode); err != nil {
		return nil, fmt.Errorf("data directory: %w", err)
	}
	path := filepath.Join(dir, LockFileName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, dataFileMode)
	if err != nil {
		return nil, fmt.Errorf("data directory lock: %w", err)
	}
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: io.SeekStart} // Start 0, Len 0: the whole file
	for {
		err = unix.FcntlFlock(f.Fd(), unix.F_OFD_SETLK, &lk)
		if err != unix.EINTR {
			break
		}
	}
	switch {
	case err == unix.EAGAIN || err == unix.EACCES:
		f.Close()
		return nil, &dirInUseError{dir: dir, pid: lockFilePID(path)}
	case err != nil:
		f.Close()
		return nil, fmt.Errorf("data directory lock %s (F_OFD_SETLK): %w", path, err)
	}
	if err := writePID(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("data directory lock %s: %w", path, err)
	}
	return &dirLock{f: f}, nil
}

// writePID replaces the lock file's contents with this process's pid.
func writePID(f *os.File) error {
	if err := f.Truncate(0); err != nil {
		return err
	}
	_, err := f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	return err
}

// lockFilePID returns the pid in the lock file at path, or 0 if it holds
// none (its holder may not have written it yet).
func lockFilePID(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0
	}
	return pid
}

// release empties the lock file, so that no stale pid is left in it, and
// lets the lock go.
func (l *dirLock) release() error {
	if l == nil || l.f == nil {
		return nil
	}
	terr := l.f.Truncate(0)
	cerr := l.f.Close()
	l.f = nil
	if err := errors.Join(terr, cerr); err != nil {
		return fmt.Errorf("data directory lock: %w", err)
	}
	return nil
}
