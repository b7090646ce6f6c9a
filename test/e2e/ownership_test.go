package e2e

// Exclusive ownership: a data directory serves one daemon, a file one bdev,
// and qemu and blockcache refuse each other's files; special files are
// refused at once.

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"blockcache/internal/testutil"
)

// qemuLockRefusal is what qemu-io and qemu-img say when another process
// holds a lock on an image.
const qemuLockRefusal = "Failed to lock byte"

// offlineTool runs `blockcache ARGS...` and returns its exit code and
// stderr.
func offlineTool(t *testing.T, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(binPath, args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, stderr.String()
	case errors.As(err, &ee):
		return ee.ExitCode(), stderr.String()
	}
	t.Fatalf("blockcache %s: %v", strings.Join(args, " "), err)
	return -1, ""
}

// qemuRead reads the first sector of a raw image file with qemu-io, which
// takes qemu's locks, and returns its output and error.
func qemuRead(t *testing.T, path string) (string, error) {
	t.Helper()
	return testutil.RunErr(t, nil, "qemu-io", "-r", "-f", "raw", "-c", "read 0 512", path)
}

// TestSecondDaemonOnDataDir starts a second daemon on a data directory a
// first one serves (other socket, other port): it must exit non-zero naming
// the first one's pid, having touched nothing, while the first keeps
// serving its data. The first daemon's images are refused to qemu and to
// the offline tools until it stops.
func TestSecondDaemonOnDataDir(t *testing.T) {
	t.Parallel()
	testutil.RequireTool(t, "qemu-io")
	dataDir := filepath.Join(t.TempDir(), "data")
	first := StartDaemon(t, DaemonOpts{DataDir: dataDir})
	first.waitStdout(t, "export cache0: ")
	qemuIO(t, first.URI("cache0"), "write -P 0x5a 1m 256k", "write -P 0xa5 1200m 64k")
	configBefore, err := os.ReadFile(filepath.Join(dataDir, "config.json"))
	if err != nil {
		t.Fatal(err)
	}

	second := startProcess(t, DaemonOpts{DataDir: dataDir})
	if code := second.Wait(t, 30*time.Second); code == 0 {
		t.Fatalf("a second daemon on %s exited 0\nstderr:\n%s", dataDir, second.Stderr())
	}
	want := fmt.Sprintf("data directory %s is in use by blockcache pid %d", dataDir, first.cmd.Process.Pid)
	if !strings.Contains(second.Stderr(), want) {
		t.Fatalf("second daemon's stderr does not say %q:\n%s", want, second.Stderr())
	}
	if _, err := os.Stat(second.Sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the refused daemon created its RPC socket: %v", err)
	}
	if after, err := os.ReadFile(filepath.Join(dataDir, "config.json")); err != nil || string(after) != string(configBefore) {
		t.Errorf("the refused daemon changed config.json (%v)", err)
	}

	// The first daemon serves what it was given, and more.
	qemuIO(t, first.URI("cache0"), "read -P 0x5a 1m 256k", "read -P 0xa5 1200m 64k",
		"write -P 0x3c 8m 64k", "read -P 0x3c 8m 64k", "read -P 0 0 1m")

	cacheImg := filepath.Join(dataDir, "cache.img")
	for _, img := range []string{cacheImg, filepath.Join(dataDir, "core.img")} {
		if out, err := qemuRead(t, img); err == nil || !strings.Contains(out, qemuLockRefusal) {
			t.Errorf("qemu-io on %s held by the daemon: %v, output %q; want refused with %q", img, err, out, qemuLockRefusal)
		}
	}
	for _, tool := range []string{"check", "inspect"} {
		code, stderr := offlineTool(t, tool, cacheImg)
		want := fmt.Sprintf("%s is in use by blockcache pid %d", cacheImg, first.cmd.Process.Pid)
		if code != 3 || !strings.Contains(stderr, want) || !strings.Contains(stderr, "stop the daemon") {
			t.Errorf("%s on the daemon's cache: exit %d, stderr %q; want exit 3 saying %q and what to do", tool, code, stderr, want)
		}
	}

	first.Stop(t)
	if code, stderr := offlineTool(t, "check", cacheImg); code != 0 {
		t.Errorf("check after the daemon stopped: exit %d, stderr %q", code, stderr)
	}
	if out, err := qemuRead(t, cacheImg); err != nil {
		t.Errorf("qemu-io after the daemon stopped: %v\n%s", err, out)
	}
	third := StartDaemon(t, DaemonOpts{DataDir: dataDir})
	qemuIO(t, third.URI("cache0"), "read -P 0x5a 1m 256k", "read -P 0x3c 8m 64k")
	third.Stop(t)
}

// expectBusy checks a bdev_aio_create refused with -16 and data naming the
// path and the holder.
func expectBusy(t *testing.T, d *Daemon, params map[string]any, path, holder string) {
	t.Helper()
	je := d.CallErr(t, "bdev_aio_create", params)
	if je.Code != -int(syscall.EBUSY) || je.Message != "Device or resource busy" {
		t.Fatalf("bdev_aio_create on a held file: {%d, %q} (data %q), want {-16, \"Device or resource busy\"}", je.Code, je.Message, je.Data)
	}
	if want := path + " is in use by " + holder; !strings.Contains(je.Data, want) {
		t.Fatalf("error data %q does not say %q", je.Data, want)
	}
}

// TestSecondAioBdevOnFile creates two aio bdevs on one file in one daemon:
// the second is refused with -16 naming the path, read-only or not, and the
// file is free again once the first bdev is deleted.
func TestSecondAioBdevOnFile(t *testing.T) {
	t.Parallel()
	d := StartDaemon(t, DaemonOpts{Bare: true})
	img := writeFile(t, t.TempDir(), "disk.img", make([]byte, 4<<20))
	d.Call(t, "bdev_aio_create", aioParams(img, "A0"))
	holder := fmt.Sprintf("blockcache pid %d (this process)", d.cmd.Process.Pid)
	expectBusy(t, d, aioParams(img, "A1"), img, holder)
	ro := aioParams(img, "A2")
	ro["readonly"] = true
	expectBusy(t, d, ro, img, holder)

	var bdevs []bdevInfo
	d.CallInto(t, "bdev_get_bdevs", nil, &bdevs)
	if len(bdevs) != 1 || bdevs[0].Name != "A0" {
		t.Fatalf("bdevs after the refusals: %+v, want only A0", bdevs)
	}
	d.Call(t, "bdev_aio_delete", map[string]any{"name": "A0"})
	d.Call(t, "bdev_aio_create", aioParams(img, "A1"))
	d.Stop(t)
}

// TestQemuAndBlockcacheRefuseEachOther checks both directions with real
// qemu tools: qemu-io and qemu-img refuse a file an aio bdev holds, and
// bdev_aio_create refuses a file a running qemu-nbd serves, naming it.
func TestQemuAndBlockcacheRefuseEachOther(t *testing.T) {
	t.Parallel()
	qemuNBD := testutil.RequireTool(t, "qemu-nbd")
	testutil.RequireTool(t, "qemu-img")
	dir := t.TempDir()
	ours := writeFile(t, dir, "ours.img", make([]byte, 4<<20))
	theirs := writeFile(t, dir, "theirs.img", make([]byte, 4<<20))
	d := StartDaemon(t, DaemonOpts{Bare: true})

	d.Call(t, "bdev_aio_create", aioParams(ours, "Ours"))
	if out, err := qemuRead(t, ours); err == nil || !strings.Contains(out, qemuLockRefusal) {
		t.Errorf("qemu-io on a file an aio bdev holds: %v, output %q; want refused with %q", err, out, qemuLockRefusal)
	}
	out, err := testutil.RunErr(t, nil, "qemu-img", "convert", "-f", "raw", "-O", "raw", ours, filepath.Join(dir, "copy.img"))
	if err == nil || !strings.Contains(out, qemuLockRefusal) {
		t.Errorf("qemu-img convert from a file an aio bdev holds: %v, output %q; want refused with %q", err, out, qemuLockRefusal)
	}

	sock := filepath.Join(shortTempDir(t), "qemu-nbd.sock")
	srv := exec.Command(qemuNBD, "-f", "raw", "-k", sock, theirs)
	var srvOut strings.Builder
	srv.Stdout, srv.Stderr = &srvOut, &srvOut
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	srvDone := make(chan struct{})
	go func() { srv.Wait(); close(srvDone) }()
	t.Cleanup(func() {
		srv.Process.Kill()
		<-srvDone
	})
	// qemu-nbd opens (and locks) the image before it listens.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("qemu-nbd did not listen on %s within 10s: %s", sock, srvOut.String())
		}
	}
	expectBusy(t, d, aioParams(theirs, "Theirs"), theirs, fmt.Sprintf("qemu-nbd pid %d", srv.Process.Pid))

	srv.Process.Signal(syscall.SIGTERM)
	<-srvDone
	d.Call(t, "bdev_aio_create", aioParams(theirs, "Theirs"))
	d.Stop(t)
}

// TestSpecialFilesRefusedQuickly asks for aio bdevs on a FIFO (read-write
// and read-only: opening a FIFO read-only blocks until a writer comes), a
// socket, a character device and a directory: each answer comes at once,
// -22 naming the type, and the daemon goes on answering.
func TestSpecialFilesRefusedQuickly(t *testing.T) {
	t.Parallel()
	d := StartDaemon(t, DaemonOpts{Bare: true})
	dir := shortTempDir(t)
	fifo := filepath.Join(dir, "fifo")
	if err := unix.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("unix", filepath.Join(dir, "sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	tests := []struct {
		path, kind string
		readOnly   bool
	}{
		{fifo, "a FIFO", false},
		{fifo, "a FIFO", true},
		{filepath.Join(dir, "sock"), "a socket", false},
		{"/dev/null", "a character device", false},
		{dir, "a directory", true},
	}
	for i, tc := range tests {
		p := aioParams(tc.path, fmt.Sprintf("S%d", i))
		p["readonly"] = tc.readOnly
		start := time.Now()
		je := d.CallErr(t, "bdev_aio_create", p)
		if took := time.Since(start); took > 5*time.Second {
			t.Errorf("bdev_aio_create on %s took %v", tc.kind, took)
		}
		if je.Code != -int(syscall.EINVAL) || !strings.Contains(je.Data, tc.kind+", not a regular file or block device") {
			t.Errorf("bdev_aio_create on %s (readonly %v): {%d, %q} data %q; want -22 naming %q", tc.kind, tc.readOnly, je.Code, je.Message, je.Data, tc.kind)
		}
	}
	var version struct {
		Version string `json:"version"`
	}
	d.CallInto(t, "spdk_get_version", nil, &version)
	if version.Version == "" {
		t.Fatal("spdk_get_version after the refusals: empty version")
	}
	var bdevs []bdevInfo
	d.CallInto(t, "bdev_get_bdevs", nil, &bdevs)
	if len(bdevs) != 0 {
		t.Fatalf("refused special files left bdevs: %+v", bdevs)
	}
	d.Stop(t)
}
