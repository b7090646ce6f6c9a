package jsonrpc

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"sync"
	"syscall"
	"time"
)

// InUseError is returned by Listen when another live server owns the socket
// path.
type InUseError struct {
	Path string
}

func (e *InUseError) Error() string {
	return "another blockcache (or SPDK) is already listening on " + e.Path
}

// Listen creates the Unix socket path for Serve, with SPDK's protocol for
// sharing a socket directory: it first takes an exclusive flock on
// "<path>.lock" (the lock file SPDK's spdk_rpc_listen uses), so that two
// daemons cannot both claim the path, and fails with *InUseError when the
// lock is held. Holding the lock, it removes a stale socket file left by a
// dead process; if something still answers on the socket (a server that
// does not use the lock file) it fails with *InUseError too. It never
// removes a path that is not a socket.
//
// Closing the listener removes the socket and the lock file.
func Listen(path string) (net.Listener, error) {
	lockPath := path + ".lock"
	lock, err := os.OpenFile(lockPath, os.O_RDONLY|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("rpc socket %s: open lock file: %w", path, err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		lock.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, &InUseError{Path: path}
		}
		return nil, fmt.Errorf("rpc socket %s: lock %s: %w", path, lockPath, err)
	}
	fail := func(err error) (net.Listener, error) {
		lock.Close() // releases the flock; the file stays for the next owner
		return nil, err
	}

	switch fi, err := os.Lstat(path); {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return fail(fmt.Errorf("rpc socket %s: %w", path, err))
	case fi.Mode()&fs.ModeSocket == 0:
		return fail(fmt.Errorf("rpc socket %s: path exists and is not a socket; not removing it", path))
	default:
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return fail(&InUseError{Path: path})
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fail(fmt.Errorf("rpc socket %s: remove stale socket: %w", path, err))
		}
	}

	l, err := net.Listen("unix", path)
	if err != nil {
		return fail(fmt.Errorf("rpc socket %s: %w", path, err))
	}
	return &unixListener{Listener: l, lock: lock, lockPath: lockPath}, nil
}

// unixListener releases the lock file after the socket is closed.
type unixListener struct {
	net.Listener
	lock     *os.File
	lockPath string
	once     sync.Once
	err      error
}

// Close closes the socket (which unlinks it), then removes and unlocks the
// lock file, as spdk_rpc_close does. It is safe to call more than once.
func (l *unixListener) Close() error {
	l.once.Do(func() {
		l.err = l.Listener.Close()
		os.Remove(l.lockPath)
		l.lock.Close()
	})
	return l.err
}
