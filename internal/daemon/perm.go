package daemon

// File modes that do not depend on the umask. The data directory is 0700
// and the files the daemon keeps there 0600; the RPC socket is 0600 (0660
// with a managing group) and the NBD Unix socket 0600 unless configured.
// Sockets are bound under a umask of 0177, so that no client can connect
// between bind and chmod, and a socket or lock file left by another user
// is never reused (the default RPC socket is in /var/tmp, where anyone can
// create files).

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	"blockcache/internal/jsonrpc"
)

// Modes of what the daemon creates.
const (
	dataDirMode     fs.FileMode = 0o700
	dataFileMode    fs.FileMode = 0o600
	rpcSocketMode   fs.FileMode = 0o600
	rpcGroupMode    fs.FileMode = 0o660
	nbdSocketMode   fs.FileMode = 0o600 // DefaultNBDSocketMode
	socketBindUmask             = 0o177
)

// DefaultNBDSocketMode is the NBD Unix socket's mode unless
// Config.NBDSocketMode says otherwise.
const DefaultNBDSocketMode = nbdSocketMode

// ErrNotOwner is wrapped by New's error when the RPC or NBD socket path,
// or the RPC socket's lock file, exists and belongs to another user.
var ErrNotOwner = errors.New("owned by another user")

// dataFiles are the files of the data directory whose modes are tightened
// at start.
var dataFiles = []string{ConfigFileName, LockFileName, defaultCacheFile, defaultCoreFile}

// secureDataDir takes group and other permissions away from the data
// directory and the daemon's files in it, logging each change.
func secureDataDir(dir string, log *slog.Logger) error {
	if err := tighten(dir, dataDirMode, log); err != nil {
		return fmt.Errorf("data directory: %w", err)
	}
	for _, name := range dataFiles {
		if err := tighten(filepath.Join(dir, name), dataFileMode, log); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("data directory: %w", err)
		}
	}
	return nil
}

// tighten clears the permission bits of path that max does not have. It
// does not follow a symbolic link.
func tighten(path string, max fs.FileMode, log *slog.Logger) error {
	fi, err := os.Lstat(path)
	if err != nil {
		return err
	}
	if fi.Mode()&fs.ModeSymlink != 0 {
		return nil
	}
	old := fi.Mode().Perm()
	if old&^max == 0 {
		return nil
	}
	mode := old & max
	if err := os.Chmod(path, mode); err != nil {
		return err
	}
	log.Warn("tightened file mode", "path", path, "old", fmt.Sprintf("%04o", old), "new", fmt.Sprintf("%04o", mode))
	return nil
}

// checkOwned refuses paths that exist and are not this user's, or are
// symbolic links (which could point anywhere).
func checkOwned(paths ...string) error {
	euid := os.Geteuid()
	for _, p := range paths {
		fi, err := os.Lstat(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		if fi.Mode()&fs.ModeSymlink != 0 {
			return fmt.Errorf("%s is a symbolic link: refusing to use it", p)
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if ok && int(st.Uid) != euid {
			return fmt.Errorf("%s is %w (uid %d; this daemon runs as uid %d): refusing to reuse it; remove it or choose another path",
				p, ErrNotOwner, st.Uid, euid)
		}
	}
	return nil
}

// umaskMu serialises listenPrivate's changes of the process-wide umask, so
// that two binds cannot restore each other's value.
var umaskMu sync.Mutex

// listenPrivate binds a Unix socket with listen under a umask that leaves
// it readable and writable by its owner only, whatever the process's umask.
// The umask is the process's: a file another goroutine creates during the
// bind gets it too, so the daemon binds its sockets at start-up, before
// anything else creates files.
func listenPrivate(listen func() (net.Listener, error)) (net.Listener, error) {
	umaskMu.Lock()
	defer umaskMu.Unlock()
	old := unix.Umask(socketBindUmask)
	defer unix.Umask(old)
	return listen()
}

// setSocketAccess gives a bound socket its mode and, if group is not
// empty, that group (a name or a number) with mode 0660.
func setSocketAccess(path string, mode fs.FileMode, group string) error {
	if group != "" {
		gid, err := lookupGroup(group)
		if err != nil {
			return err
		}
		if err := os.Lchown(path, -1, gid); err != nil {
			return fmt.Errorf("give %s to group %s: %w", path, group, err)
		}
		mode = rpcGroupMode
	}
	if err := os.Chmod(path, mode); err != nil {
		return fmt.Errorf("chmod %s %04o: %w", path, mode, err)
	}
	return nil
}

// lookupGroup resolves a group name or number.
func lookupGroup(group string) (int, error) {
	if gid, err := strconv.Atoi(group); err == nil && gid >= 0 {
		return gid, nil
	}
	g, err := user.LookupGroup(group)
	if err != nil {
		return 0, fmt.Errorf("rpc group: %w", err)
	}
	return strconv.Atoi(g.Gid)
}

// listenRPC binds the RPC socket (see jsonrpc.Listen), refusing a socket or
// lock file of another user, and gives it its mode and group.
func (d *Daemon) listenRPC() (net.Listener, error) {
	path := d.cfg.RPCSocket
	if err := checkOwned(path, path+".lock"); err != nil {
		return nil, err
	}
	l, err := listenPrivate(func() (net.Listener, error) { return jsonrpc.Listen(path) })
	if err != nil {
		return nil, err
	}
	if err := setSocketAccess(path, rpcSocketMode, d.cfg.RPCGroup); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

// listenNBDUnix binds the NBD Unix socket, replacing a stale one of this
// user's, with Config.NBDSocketMode.
func (d *Daemon) listenNBDUnix() (net.Listener, error) {
	path := d.cfg.NBDSocket
	if err := checkOwned(path); err != nil {
		return nil, err
	}
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&fs.ModeSocket == 0 {
		return nil, fmt.Errorf("%s exists and is not a socket; not removing it", path)
	}
	os.Remove(path)
	l, err := listenPrivate(func() (net.Listener, error) { return net.Listen("unix", path) })
	if err != nil {
		return nil, err
	}
	mode := d.cfg.NBDSocketMode
	if mode == 0 {
		mode = DefaultNBDSocketMode
	}
	if err := setSocketAccess(path, mode, ""); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}
