package e2e

// README's "Cache your own disk", followed command by command through the
// CLI and real NBD clients; direct IO on file bdevs, the embedded default
// included; the fallback where a file system refuses O_DIRECT.

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"blockcache/internal/testutil"
)

// cli runs a blockcache client command against d and returns its stdout
// and stderr, failing the test unless it exits 0.
func (d *Daemon) cli(t *testing.T, args ...string) (stdout, stderr string) {
	t.Helper()
	cmd := exec.Command(binPath, append(args, "-s", d.Sock)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("blockcache %s: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, out.String(), errb.String())
	}
	return out.String(), errb.String()
}

// directFDs counts the daemon's file descriptors open on path with and
// without O_DIRECT (/proc/PID/fdinfo flags).
func (d *Daemon) directFDs(t *testing.T, path string) (direct, buffered int) {
	t.Helper()
	for _, flags := range testutil.OpenFlags(t, d.cmd.Process.Pid, path) {
		if flags&unix.O_DIRECT != 0 {
			direct++
		} else {
			buffered++
		}
	}
	return direct, buffered
}

// dirtyLines returns usage.dirty.count of cache stats NAME --json.
func (d *Daemon) dirtyLines(t *testing.T, name string) uint64 {
	t.Helper()
	out, _ := d.cli(t, "cache", "stats", name, "--json")
	var s struct {
		Usage struct {
			Dirty struct {
				Count uint64 `json:"count"`
			} `json:"dirty"`
		} `json:"usage"`
	}
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		t.Fatalf("cache stats %s --json: %v\n%s", name, err, out)
	}
	return s.Usage.Dirty.Count
}

// ownCore returns the core device of README's example: a loop device over
// a sparse file, as root can make one; a plain file where losetup fails.
func ownCore(t *testing.T, size int64) string {
	t.Helper()
	img := filepath.Join(sparseFiles(t, map[string]int64{"core.img": size}), "core.img")
	out, err := exec.Command("losetup", "--find", "--show", img).CombinedOutput()
	if err != nil {
		t.Logf("losetup failed (%v: %s): the core is the file %s itself", err, out, img)
		return img
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() {
		if out, err := exec.Command("losetup", "-d", dev).CombinedOutput(); err != nil {
			t.Errorf("losetup -d %s: %v: %s", dev, err, out)
		}
	})
	return dev
}

// TestOwnDisk follows README's "Cache your own disk": a loop device as the
// core, a file as the cache, in a data directory that starts empty; create
// (direct IO on both), export, write and read with qemu-io, copy with
// nbdcopy, flush, stop, restart (the volume, its data and its export come
// back), and take the cache away (flush, delete, delete the file bdevs):
// the core alone then holds every write.
func TestOwnDisk(t *testing.T) {
	t.Parallel()
	core := ownCore(t, 64<<20)
	cache := filepath.Join(sparseFiles(t, map[string]int64{"cache.img": 16 << 20}), "cache.img")
	dataDir := filepath.Join(t.TempDir(), "blockcache")
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	writeFile(t, dataDir, "config.json", []byte(`{"subsystems":[]}`+"\n"))
	d := StartDaemon(t, DaemonOpts{DataDir: dataDir})

	out, stderr := d.cli(t, "cache", "create", "disk0", "--mode", "wb", "--cache", cache, "--core", core)
	want := "created file bdev disk0_cache on " + cache + "\ncreated file bdev disk0_core on " + core + "\ndisk0\n"
	if out != want || stderr != "" {
		t.Fatalf("cache create: stdout %q (want %q), stderr %q", out, want, stderr)
	}
	for _, path := range []string{cache, core} {
		if direct, buffered := d.directFDs(t, path); direct != 1 || buffered != 0 {
			t.Fatalf("the daemon has %d direct and %d buffered fds on %s, want 1 direct", direct, buffered, path)
		}
	}
	if out, _ := d.cli(t, "bdev", "list", "disk0_core", "--json"); strings.Contains(out, "buffered") {
		t.Fatalf("disk0_core is not direct:\n%s", out)
	}

	uri, _ := d.cli(t, "export", "start", "disk0")
	uri = strings.TrimSpace(uri)
	qemuIO(t, uri, "write -P 0xab 0 1M", "write -P 0xcd 8M 512k", "read -P 0xab 0 1M", "read -P 0xcd 8M 512k")
	copyPath := filepath.Join(t.TempDir(), "copy.img")
	testutil.Run(t, nil, "nbdcopy", uri, copyPath)
	copied, err := os.ReadFile(copyPath)
	if err != nil {
		t.Fatal(err)
	}
	if len(copied) != 64<<20 || !bytes.Equal(copied[:1<<20], bytes.Repeat([]byte{0xab}, 1<<20)) ||
		!bytes.Equal(copied[8<<20:8<<20+512<<10], bytes.Repeat([]byte{0xcd}, 512<<10)) {
		t.Fatalf("nbdcopy's copy (%d bytes) does not hold what qemu-io wrote", len(copied))
	}
	if n := d.dirtyLines(t, "disk0"); n == 0 {
		t.Fatal("wb: no dirty line after the writes")
	}
	d.cli(t, "cache", "flush", "disk0")
	if n := d.dirtyLines(t, "disk0"); n != 0 {
		t.Fatalf("%d dirty lines after cache flush", n)
	}

	// Dirty again, then stop (SIGTERM) and restart on the same directory.
	qemuIO(t, uri, "write -P 0xef 16M 256k")
	d.Stop(t)
	d = StartDaemon(t, DaemonOpts{DataDir: dataDir})
	uri = d.URI("disk0")
	qemuIO(t, uri, "read -P 0xab 0 1M", "read -P 0xcd 8M 512k", "read -P 0xef 16M 256k")
	if out, _ := d.cli(t, "cache", "list", "disk0"); !strings.Contains(out, "started") {
		t.Fatalf("after the restart disk0 is not started:\n%s", out)
	}

	// Take the cache away: flush, delete the volume and the file bdevs.
	qemuIO(t, uri, "write -P 0x5a 24M 128k")
	d.cli(t, "cache", "flush", "disk0")
	d.cli(t, "cache", "delete", "disk0")
	d.cli(t, "bdev", "delete-file", "disk0_cache")
	d.cli(t, "bdev", "delete-file", "disk0_core")
	if out, _ := d.cli(t, "bdev", "list"); strings.Contains(out, "disk0") {
		t.Fatalf("bdevs left after taking the cache away:\n%s", out)
	}
	raw, err := os.ReadFile(core)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []struct {
		off, n int
		b      byte
	}{{0, 1 << 20, 0xab}, {8 << 20, 512 << 10, 0xcd}, {16 << 20, 256 << 10, 0xef}, {24 << 20, 128 << 10, 0x5a}} {
		if !bytes.Equal(raw[w.off:w.off+w.n], bytes.Repeat([]byte{w.b}, w.n)) {
			t.Errorf("the core alone lacks the %#x written at %d", w.b, w.off)
		}
	}
	d.Stop(t)
}

// TestDefaultRunsDirect: serve with no flags opens the embedded default's
// image files direct, and a restart on the same data directory serves what
// was written.
func TestDefaultRunsDirect(t *testing.T) {
	t.Parallel()
	dataDir := filepath.Join(t.TempDir(), "data")
	d := StartDaemon(t, DaemonOpts{DataDir: dataDir})
	for _, img := range []string{"cache.img", "core.img"} {
		if direct, buffered := d.directFDs(t, filepath.Join(dataDir, img)); direct != 1 || buffered != 0 {
			t.Fatalf("%s: %d direct and %d buffered fds, want 1 direct", img, direct, buffered)
		}
	}
	qemuIO(t, d.URI("cache0"), "write -P 0x33 1M 64k")
	d.Stop(t)
	d = StartDaemon(t, DaemonOpts{DataDir: dataDir})
	qemuIO(t, d.URI("cache0"), "read -P 0x33 1M 64k")
	d.Stop(t)
}

// TestDirectFallback puts the cache file on ramfs, which refuses O_DIRECT:
// cache create succeeds, says on stderr that the bdev uses the page cache
// and why, the daemon logs a WARN naming the path and the reason, and
// bdev_get_bdevs shows buffered and the reason. --buffered on a file system
// that allows direct IO gives a buffered bdev with no warning.
func TestDirectFallback(t *testing.T) {
	t.Parallel()
	ramfs := filepath.Join(t.TempDir(), "ramfs")
	if err := os.Mkdir(ramfs, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("blockcache-e2e", ramfs, "ramfs", 0, ""); err != nil {
		t.Fatalf("mount ramfs (the tests run as root): %v", err)
	}
	t.Cleanup(func() { unix.Unmount(ramfs, unix.MNT_DETACH) })
	cache := writeFile(t, ramfs, "cache.img", make([]byte, 8<<20))
	core := filepath.Join(sparseFiles(t, map[string]int64{"core.img": 32 << 20}), "core.img")
	d := StartDaemon(t, DaemonOpts{Bare: true})

	out, stderr := d.cli(t, "cache", "create", "V", "--cache", cache, "--core", core)
	if !strings.HasSuffix(out, "V\n") {
		t.Fatalf("cache create printed %q", out)
	}
	wantNote := "blockcache: cache create V: " + cache + ": file system refuses O_DIRECT: invalid argument; bdev V_cache uses the page cache\n"
	if stderr != wantNote {
		t.Fatalf("cache create stderr %q, want %q", stderr, wantNote)
	}
	// The daemon's log reaches the test through a pipe: wait for the line.
	if line := waitLogLine(t, d, "direct IO refused", 10*time.Second); !strings.Contains(line, "level=WARN") ||
		!strings.Contains(line, "path="+cache) || !strings.Contains(line, "O_DIRECT") {
		t.Fatalf("no WARN naming %s and the reason:\n%s", cache, d.Stderr())
	}
	if n := strings.Count(d.Stderr(), "direct IO refused"); n != 1 {
		t.Fatalf("%d warnings, want 1 (the core is direct)", n)
	}
	if out, _ := d.cli(t, "bdev", "list", "V_cache", "--json"); !strings.Contains(out, `"buffered": true`) || !strings.Contains(out, `"direct_refused": "file system refuses O_DIRECT`) {
		t.Fatalf("bdev list V_cache --json:\n%s", out)
	}
	if direct, buffered := d.directFDs(t, cache); direct != 0 || buffered != 1 {
		t.Fatalf("cache on ramfs: %d direct and %d buffered fds, want 1 buffered", direct, buffered)
	}
	d.cli(t, "export", "start", "V")
	qemuIO(t, d.URI("V"), "write -P 0x77 0 256k", "read -P 0x77 0 256k")

	other := filepath.Join(sparseFiles(t, map[string]int64{"b.img": 1 << 20}), "b.img")
	if out, stderr := d.cli(t, "bdev", "create-file", "B", other, "--buffered"); out != "B\n" || stderr != "" {
		t.Fatalf("bdev create-file --buffered: stdout %q, stderr %q", out, stderr)
	}
	if direct, buffered := d.directFDs(t, other); direct != 0 || buffered != 1 {
		t.Fatalf("--buffered: %d direct and %d buffered fds, want 1 buffered", direct, buffered)
	}
	if n := strings.Count(d.Stderr(), "direct IO refused"); n != 1 {
		t.Fatalf("--buffered logged a warning:\n%s", d.Stderr())
	}
}

// cliFails runs a blockcache client command against d, expecting exit
// status 1 and a stderr holding every one of want; it returns stderr.
func (d *Daemon) cliFails(t *testing.T, args []string, want ...string) string {
	t.Helper()
	cmd := exec.Command(binPath, append(args, "-s", d.Sock)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 || out.Len() != 0 {
		t.Fatalf("blockcache %s: %v, stdout %q, want exit 1 and no output", strings.Join(args, " "), err, out.String())
	}
	for _, w := range want {
		if !strings.Contains(errb.String(), w) {
			t.Errorf("blockcache %s: stderr %q lacks %q", strings.Join(args, " "), errb.String(), w)
		}
	}
	return errb.String()
}

// TestOwnDiskBadDevices gives cache create devices it cannot use, through
// the real CLI and daemon: a path that does not exist, a block device
// another program holds exclusively, a block device too small for the
// cache metadata. Each fails naming the path and the cause, leaves no bdev
// behind, and the daemon serves on.
func TestOwnDiskBadDevices(t *testing.T) {
	t.Parallel()
	core := ownCore(t, 32<<20)
	small := ownCore(t, 128<<10)
	cache := filepath.Join(sparseFiles(t, map[string]int64{"cache.img": 8 << 20}), "cache.img")
	d := StartDaemon(t, DaemonOpts{Bare: true})

	missing := filepath.Join(t.TempDir(), "no-such-disk")
	d.cliFails(t, []string{"cache", "create", "V", "--cache", cache, "--core", missing},
		"blockcache: cache create V: --core: file bdev V_core on "+missing+": No such file or directory (code -2)",
		"deleted the file bdev(s) it had made: V_cache")

	d.cliFails(t, []string{"cache", "create", "V", "--cache", small, "--core", core},
		"blockcache: cache create V: Could not create OCF vbdev", "cache device too small",
		"deleted the file bdev(s) it had made: V_cache, V_core")

	if strings.HasPrefix(core, "/dev/") {
		fd, err := unix.Open(core, unix.O_RDONLY|unix.O_EXCL|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatalf("hold %s exclusively: %v", core, err)
		}
		d.cliFails(t, []string{"cache", "create", "V", "--cache", cache, "--core", core},
			"blockcache: cache create V: --core: file bdev V_core on "+core+": Device or resource busy (code -16)",
			core+" is in use: mounted, or opened exclusively by another program")
		unix.Close(fd)
	} else { // losetup failed: the core is a file; another bdev holds it
		d.cli(t, "bdev", "create-file", "Holder", core)
		d.cliFails(t, []string{"cache", "create", "V", "--cache", cache, "--core", core},
			"blockcache: cache create V: --core: file bdev V_core on "+core+": Device or resource busy (code -16)", core+" is in use by ")
		d.cli(t, "bdev", "delete-file", "Holder")
	}
	if out, _ := d.cli(t, "bdev", "list"); strings.Contains(out, "V_") {
		t.Fatalf("bdevs left behind:\n%s", out)
	}
	// The daemon serves on, and the same devices work once free.
	d.cli(t, "cache", "create", "V", "--cache", cache, "--core", core)
	d.cli(t, "export", "start", "V")
	qemuIO(t, d.URI("V"), "write -P 0x42 0 64k", "read -P 0x42 0 64k")
}
