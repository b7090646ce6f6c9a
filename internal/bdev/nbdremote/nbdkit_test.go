package nbdremote

import (
	"bytes"
	"errors"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"blockcache/internal/bdev"
	"blockcache/internal/testutil"
)

// startNbdkit runs nbdkit on a Unix socket with the given plugin arguments
// and returns the socket's URI; the server is killed at cleanup.
func startNbdkit(t *testing.T, args ...string) URI {
	t.Helper()
	if _, err := exec.LookPath("nbdkit"); err != nil {
		t.Fatalf("nbdkit is needed (make deps installs it): %v", err)
	}
	sock := filepath.Join(t.TempDir(), "nbdkit.sock")
	cmd := exec.Command("nbdkit", append([]string{"-f", "-U", sock}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		err := cmd.Wait()
		if t.Failed() {
			t.Logf("nbdkit %v: %v\n%s", args, err, stderr.String())
		}
	})
	u := URI{Network: "unix", Address: sock}
	for end := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if _, _, _, err := dialConn(t.Context(), u, time.Second); err == nil {
			return u
		} else if time.Now().After(end) {
			t.Fatalf("nbdkit %v did not start: %v\n%s", args, err, stderr.String())
		}
	}
}

func openNbdkit(t *testing.T, args ...string) *Device {
	t.Helper()
	d, err := Open("remote0", startNbdkit(t, args...), uuid.Nil, fastOptions())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// TestNbdkitMemory: data, flush, trim and write-zeroes against nbdkit.
func TestNbdkitMemory(t *testing.T) {
	d := openNbdkit(t, "memory", "8M")
	st := d.Status()
	if !st.Flush || !st.FUA || !st.Trim || !st.Zero || st.ReadOnly {
		t.Fatalf("abilities %+v, want flush, FUA, trim, write zeroes", st)
	}
	if d.Info().SizeBytes() != 8<<20 {
		t.Fatalf("size %d", d.Info().SizeBytes())
	}
	p := bytes.Repeat([]byte{0xab}, 64<<10)
	if err := d.WriteAt(p, 1<<20, true); err != nil {
		t.Fatal(err)
	}
	if err := d.WriteZeroes(1<<20, 4096); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 64<<10)
	if err := d.ReadAt(got, 1<<20); err != nil {
		t.Fatal(err)
	}
	want := append(make([]byte, 4096), p[4096:]...)
	if !bytes.Equal(got, want) {
		t.Fatalf("read back differs at %d", testutil.FirstDiff(got, want))
	}
	if err := d.Discard(0, 1<<20); err != nil {
		t.Fatal(err)
	}
	if err := d.Flush(); err != nil {
		t.Fatal(err)
	}
}

// TestNbdkitErrorFilter: errors from nbdkit's error filter reach the
// caller as EIO, and the device keeps serving.
func TestNbdkitErrorFilter(t *testing.T) {
	d := openNbdkit(t, "--filter=error", "memory", "1M", "error-pread=EIO", "error-pread-rate=100%")
	err := d.ReadAt(make([]byte, 512), 0)
	var se *ServerError
	if !errors.As(err, &se) || bdev.Errno(err) != syscall.EIO {
		t.Fatalf("read = %v, want a server EIO", err)
	}
	if err := d.WriteAt(make([]byte, 512), 0, false); err != nil {
		t.Fatalf("write after a read error: %v", err)
	}
}

// TestNbdkitReadOnly: a read-only export refuses writes with EROFS without
// asking the server.
func TestNbdkitReadOnly(t *testing.T) {
	d := openNbdkit(t, "-r", "memory", "1M")
	if a := d.Info().Abilities; !d.Status().ReadOnly || !d.ReadOnly() || a.Discard || a.WriteZeroes {
		t.Fatalf("status %+v, want read-only without discard or zeroes", d.Status())
	}
	if err := d.WriteAt(make([]byte, 512), 0, false); bdev.Errno(err) != syscall.EROFS {
		t.Fatalf("write = %v, want EROFS", err)
	}
}
