package daemon

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestDataDirLock(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	l, err := lockDataDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	lockFile := filepath.Join(dir, LockFileName)
	if b, err := os.ReadFile(lockFile); err != nil || string(b) != fmt.Sprintf("%d\n", os.Getpid()) {
		t.Fatalf("lock file holds %q (%v), want this pid", b, err)
	}
	_, err = lockDataDir(dir)
	want := fmt.Sprintf("data directory %s is in use by blockcache pid %d", dir, os.Getpid())
	if !errors.Is(err, ErrDataDirInUse) || err.Error() != want {
		t.Fatalf("second lock = %v, want %q wrapping ErrDataDirInUse", err, want)
	}
	if err := l.release(); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(lockFile); err != nil || len(b) != 0 {
		t.Fatalf("released lock file holds %q (%v), want it empty", b, err)
	}
	l2, err := lockDataDir(dir)
	if err != nil {
		t.Fatalf("lock after release: %v", err)
	}
	l2.release()
}

func TestDataDirLockWithoutPID(t *testing.T) {
	dir := t.TempDir()
	l, err := lockDataDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer l.release()
	// The holder has locked but not yet written its pid.
	if err := l.f.Truncate(0); err != nil {
		t.Fatal(err)
	}
	_, err = lockDataDir(dir)
	if !errors.Is(err, ErrDataDirInUse) || !strings.Contains(err.Error(), "in use by another blockcache") {
		t.Fatalf("lock held without a pid = %v, want ErrDataDirInUse saying another blockcache holds it", err)
	}
}

// TestNewRefusesHeldDataDir checks that a daemon on a held data directory
// fails before it opens its sockets, and that --bare takes no lock.
func TestNewRefusesHeldDataDir(t *testing.T) {
	dir := t.TempDir()
	l, err := lockDataDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer l.release()
	sock := filepath.Join(t.TempDir(), "rpc.sock")
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	_, err = New(Config{RPCSocket: sock, DataDir: dir, Log: quiet})
	if !errors.Is(err, ErrDataDirInUse) {
		t.Fatalf("New on a held data directory = %v, want ErrDataDirInUse", err)
	}
	if _, err := os.Stat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("refused daemon touched its RPC socket path: %v", err)
	}
	d, err := New(Config{RPCSocket: sock, DataDir: dir, Bare: true, Log: quiet})
	if err != nil {
		t.Fatalf("New with Bare on a held data directory: %v", err)
	}
	d.closeListeners()
	if d.dirLock != nil {
		t.Fatal("a bare daemon took the data directory's lock")
	}
}
