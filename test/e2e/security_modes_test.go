package e2e

// File modes that do not depend on the umask, and sockets and lock files
// of another user, with the real daemon started under umask 000.

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"blockcache/internal/testutil"
)

// modeOf returns path's permission bits and group.
func modeOf(t *testing.T, path string) (fs.FileMode, uint32) {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm(), fi.Sys().(*syscall.Stat_t).Gid
}

func wantMode(t *testing.T, path string, want fs.FileMode) {
	t.Helper()
	if got, _ := modeOf(t, path); got != want {
		t.Errorf("%s: mode %04o, want %04o", path, got, want)
	}
}

func TestFileModesUnderUmask000(t *testing.T) {
	t.Parallel()
	sockDir := shortTempDir(t)
	nbdSock := filepath.Join(sockDir, "nbd.sock")
	data := filepath.Join(t.TempDir(), "data")
	o := DaemonOpts{DataDir: data, Shell: "umask 000;", Args: []string{"--nbd-socket", nbdSock}}
	d := StartDaemon(t, o)
	check := func() {
		t.Helper()
		wantMode(t, data, 0o700)
		for _, f := range []string{"config.json", "cache.img", "core.img", "blockcache.lock"} {
			wantMode(t, filepath.Join(data, f), 0o600)
		}
		wantMode(t, d.Sock, 0o600)
		wantMode(t, d.Sock+".lock", 0o600)
		wantMode(t, nbdSock, 0o600)
	}
	check()
	// The export is still reachable by its owner.
	testutil.Run(t, nil, "nbdinfo", "--size", "nbd+unix:///cache0?socket="+nbdSock)
	d.Stop(t)

	// Loosen everything; a restart under umask 000 tightens it again and
	// says what it changed.
	os.Chmod(data, 0o777)
	for _, f := range []string{"config.json", "cache.img", "core.img"} {
		os.Chmod(filepath.Join(data, f), 0o666)
	}
	o.Sock = d.Sock
	d = StartDaemon(t, o)
	check()
	for _, f := range []string{data, filepath.Join(data, "config.json"), filepath.Join(data, "core.img")} {
		want := fmt.Sprintf("path=%s old=0777 new=0700", f)
		if f != data {
			want = fmt.Sprintf("path=%s old=0666 new=0600", f)
		}
		if !strings.Contains(d.Stderr(), `msg="tightened file mode" `+want) {
			t.Errorf("no log line %q:\n%s", want, d.Stderr())
		}
	}
	d.Stop(t)
}

// TestSocketModeAndGroupFlags: --rpc-group gives the RPC socket to a group
// with mode 0660, --nbd-socket-mode sets the NBD socket's.
func TestSocketModeAndGroupFlags(t *testing.T) {
	t.Parallel()
	nbdSock := filepath.Join(shortTempDir(t), "nbd.sock")
	gid := os.Getgid()
	d := StartDaemon(t, DaemonOpts{Bare: true, Shell: "umask 000;",
		Args: []string{"--nbd-socket", nbdSock, "--nbd-socket-mode", "0660", "--rpc-group", fmt.Sprint(gid)}})
	if mode, g := modeOf(t, d.Sock); mode != 0o660 || int(g) != gid {
		t.Errorf("rpc socket: mode %04o group %d, want 0660 group %d", mode, g, gid)
	}
	wantMode(t, nbdSock, 0o660)
	d.Call(t, "bdev_get_bdevs", nil)

	d2 := startProcess(t, DaemonOpts{Bare: true, Args: []string{"--rpc-group", "no-such-group-here"}})
	if code := d2.Wait(t, 30*time.Second); code == 0 || !strings.Contains(d2.Stderr(), "no-such-group-here") {
		t.Fatalf("unknown --rpc-group: exit %d\n%s", code, d2.Stderr())
	}
}

// TestSocketOfAnotherUserRefused: in a world-writable directory like
// /var/tmp, another user can plant the socket path or its lock file; the
// daemon refuses to reuse either, and leaves them alone.
func TestSocketOfAnotherUserRefused(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Fatal("this test chowns files to nobody: run it as root (make test does)")
	}
	dir := shortTempDir(t)
	os.Chmod(dir, 0o1777) // like /var/tmp
	for _, planted := range []string{"rpc.sock", "rpc.sock.lock"} {
		sock := filepath.Join(dir, "rpc.sock")
		p := filepath.Join(dir, planted)
		if err := os.WriteFile(p, nil, 0o666); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(p, int(nobody.Uid), int(nobody.Gid)); err != nil {
			t.Fatal(err)
		}
		d := startProcess(t, DaemonOpts{Bare: true, Sock: sock})
		if code := d.Wait(t, 30*time.Second); code == 0 {
			t.Fatalf("%s of another user: serve exited 0", planted)
		}
		want := p + " is owned by another user (uid 65534"
		if !strings.Contains(d.Stderr(), want) {
			t.Fatalf("%s of another user: stderr does not say %q:\n%s", planted, want, d.Stderr())
		}
		if fi, err := os.Lstat(p); err != nil || fi.Sys().(*syscall.Stat_t).Uid != nobody.Uid {
			t.Fatalf("%s was touched: %v", p, err)
		}
		os.Remove(p)
	}
	// An NBD socket path of another user too.
	nbdSock := filepath.Join(dir, "nbd.sock")
	os.WriteFile(nbdSock, nil, 0o666)
	os.Chown(nbdSock, int(nobody.Uid), int(nobody.Gid))
	d := startProcess(t, DaemonOpts{Bare: true, Args: []string{"--nbd-socket", nbdSock}})
	if code := d.Wait(t, 30*time.Second); code == 0 || !strings.Contains(d.Stderr(), nbdSock+" is owned by another user") {
		t.Fatalf("NBD socket of another user: exit %d\n%s", code, d.Stderr())
	}
}
