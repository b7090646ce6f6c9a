package daemon

import (
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestCheckOwned(t *testing.T) {
	dir := t.TempDir()
	mine := filepath.Join(dir, "mine")
	if err := os.WriteFile(mine, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink(mine, link); err != nil {
		t.Fatal(err)
	}
	if err := checkOwned(mine, filepath.Join(dir, "missing")); err != nil {
		t.Fatalf("own file and missing path: %v", err)
	}
	if err := checkOwned(link); err == nil || !strings.Contains(err.Error(), "symbolic link") {
		t.Fatalf("symlink: %v", err)
	}
	if os.Geteuid() == 0 {
		other := filepath.Join(dir, "other")
		os.WriteFile(other, nil, 0o600)
		if err := os.Chown(other, 65534, 65534); err != nil {
			t.Fatal(err)
		}
		if err := checkOwned(other); !errors.Is(err, ErrNotOwner) {
			t.Fatalf("file of uid 65534: %v, want ErrNotOwner", err)
		}
	}
}

func TestSecureDataDirTightensOnlyLooseModes(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	cfg := filepath.Join(dir, ConfigFileName)
	os.WriteFile(cfg, nil, 0o600)
	os.Chmod(cfg, 0o640)
	other := filepath.Join(dir, "notes.txt") // not the daemon's: left alone
	os.WriteFile(other, nil, 0o600)
	os.Chmod(other, 0o644)
	img := filepath.Join(dir, defaultCacheFile) // already tight: not logged
	os.WriteFile(img, nil, 0o600)
	var log strings.Builder
	if err := secureDataDir(dir, slog.New(slog.NewTextHandler(&log, nil))); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]os.FileMode{dir: 0o700, cfg: 0o600, other: 0o644, img: 0o600} {
		fi, err := os.Stat(path)
		if err != nil || fi.Mode().Perm() != want {
			t.Errorf("%s: %v %v, want %04o", path, fi.Mode().Perm(), err, want)
		}
	}
	if got := strings.Count(log.String(), "tightened file mode"); got != 2 || !strings.Contains(log.String(), "old=0640 new=0600") {
		t.Fatalf("log:\n%s", log.String())
	}
}

func TestListenPrivateIgnoresUmask(t *testing.T) {
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	path := filepath.Join(t.TempDir(), "s")
	l, err := listenPrivate(func() (net.Listener, error) { return net.Listen("unix", path) })
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket bound under umask 0: %v %v, want 0600", fi.Mode().Perm(), err)
	}
	if cur := syscall.Umask(0); cur != 0 {
		t.Fatalf("umask left at %04o", cur)
	}
	if err := setSocketAccess(path, 0o600, "no-such-group-xyz"); err == nil {
		t.Fatal("unknown group accepted")
	}
}
