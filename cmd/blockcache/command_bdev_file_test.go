package main

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// imageFile makes a sparse file of size bytes in dir and returns its path.
func imageFile(t *testing.T, dir, name string, size int64) string {
	t.Helper()
	path := filepath.Join(dir, name)
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestBdevCreateDeleteFile(t *testing.T) {
	d := startDaemon(t)
	dir := t.TempDir()
	img := imageFile(t, dir, "disk.img", 4<<20)

	if got := d.ok(t, "bdev", "create-file", "F0", img); got != "F0\n" {
		t.Errorf("bdev create-file printed %q", got)
	}
	checkRow(t, d.ok(t, "bdev", "list"), "F0", "AIO disk", "4 MiB", "512", "no")

	// --block-size, --read-only, and a relative path, resolved by the client.
	img2 := imageFile(t, dir, "ro.img", 2<<20)
	wd, _ := os.Getwd()
	rel, err := filepath.Rel(wd, img2)
	if err != nil {
		t.Fatal(err)
	}
	d.ok(t, "bdev", "create-file", "F1", rel, "--block-size", "4096", "--read-only")
	checkRow(t, d.ok(t, "bdev", "list", "F1"), "F1", "AIO disk", "2 MiB", "4096", "no")
	if out := d.ok(t, "bdev", "list", "F1", "--json"); !strings.Contains(out, `"filename": "`+img2+`"`) || !strings.Contains(out, `"readonly": true`) {
		t.Errorf("bdev list F1 --json:\n%s", out)
	}

	d.fails(t, []string{"bdev", "create-file", "F0", img2}, "blockcache: bdev create-file F0: ")
	d.fails(t, []string{"bdev", "create-file", "F2", filepath.Join(dir, "nodir", "x.img")}, "blockcache: bdev create-file F2: ")
	d.fails(t, []string{"bdev", "create-file", "F2"}, "accepts 2 arg(s)")

	d.ok(t, "bdev", "delete-file", "F0")
	d.ok(t, "bdev", "delete-file", "F1")
	checkRowCount(t, d.ok(t, "bdev", "list"), 0)
	d.fails(t, []string{"bdev", "delete-file", "F0"}, "blockcache: bdev delete-file F0: No such device")
}

func TestCacheCreateOnPaths(t *testing.T) {
	d := startDaemon(t)
	dir := t.TempDir()
	cache := imageFile(t, dir, "cache.img", 8<<20)
	core := imageFile(t, dir, "core.img", 32<<20)

	want := "created file bdev C0_cache on " + cache + "\ncreated file bdev C0_core on " + core + "\nC0\n"
	if got := d.ok(t, "cache", "create", "C0", "--cache", cache, "--core", core, "--mode", "wb"); got != want {
		t.Errorf("cache create printed %q, want %q", got, want)
	}
	checkRow(t, d.ok(t, "cache", "list"), "C0", "started", "wb", "4 KiB", "C0_cache", "yes", "C0_core", "yes", "-")
	out := d.ok(t, "bdev", "list")
	checkRow(t, out, "C0_cache", "AIO disk", "8 MiB", "512", "yes")
	checkRow(t, out, "C0_core", "AIO disk", "32 MiB", "512", "yes")
	checkRow(t, out, "C0", "SPDK OCF", "32 MiB", "512", "no")
	nbdDone := func() {
		d.ok(t, "export", "start", "C0")
		nbdIO(t, d, "C0", 2)
		d.ok(t, "export", "stop", "C0")
	}
	nbdDone()

	// A bdev name and a path mixed: only the path gets a file bdev.
	d.malloc(t, "M0", 16384, 512)
	core1 := imageFile(t, dir, "core1.img", 16<<20)
	want = "created file bdev C1_core on " + core1 + "\nC1\n"
	if got := d.ok(t, "cache", "create", "C1", "--cache", "M0", "--core", core1); got != want {
		t.Errorf("cache create printed %q, want %q", got, want)
	}
	checkRow(t, d.ok(t, "cache", "list", "C1"), "C1", "started", "wt", "4 KiB", "M0", "yes", "C1_core", "yes", "-")
	d.ok(t, "cache", "delete", "C1")
	d.ok(t, "bdev", "delete-file", "C1_core")

	before := d.ok(t, "bdev", "list")

	// The core is a FIFO: the cache's file bdev is deleted again.
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	stderr := d.fails(t, []string{"cache", "create", "C2", "--cache", imageFile(t, dir, "c2.img", 8<<20), "--core", fifo},
		"blockcache: cache create C2: --core: file bdev C2_core on "+fifo+": ", "deleted the file bdev(s) it had made: C2_cache")
	if strings.Contains(stderr, "left behind") {
		t.Errorf("stderr: %s", stderr)
	}
	if got := d.ok(t, "bdev", "list"); got != before {
		t.Errorf("bdev list after a failed create:\n%s\nwant\n%s", got, before)
	}

	// A missing directory for the cache: nothing was made, nothing to delete.
	stderr = d.fails(t, []string{"cache", "create", "C2", "--cache", filepath.Join(dir, "nodir", "c.img"), "--core", core1},
		"blockcache: cache create C2: --cache: file bdev C2_cache on "+filepath.Join(dir, "nodir", "c.img")+": ")
	if strings.Contains(stderr, "deleted") {
		t.Errorf("stderr: %s", stderr)
	}
	if got := d.ok(t, "bdev", "list"); got != before {
		t.Errorf("bdev list after a failed create:\n%s\nwant\n%s", got, before)
	}

	// Both file bdevs made, then bdev_ocf_create fails (the name is taken):
	// both are deleted again.
	d.malloc(t, "M1", 16384, 512)
	d.ok(t, "cache", "create", "X", "--cache", "M0", "--core", "M1")
	before = d.ok(t, "bdev", "list")
	d.fails(t, []string{"cache", "create", "X", "--cache", imageFile(t, dir, "c3.img", 8<<20), "--core", core1},
		"blockcache: cache create X: Could not create OCF vbdev", "deleted the file bdev(s) it had made: X_cache, X_core")
	if got := d.ok(t, "bdev", "list"); got != before {
		t.Errorf("bdev list after a failed create:\n%s\nwant\n%s", got, before)
	}
	nbdDone() // C0 is untouched
}

// TestCacheCreateWaits names a core bdev that does not exist yet: the
// volume is created and waits, and the command says so on stderr; it starts
// once the bdev appears.
func TestCacheCreateWaits(t *testing.T) {
	d := startDaemon(t)
	d.malloc(t, "M0", 16384, 512)
	r := d.cli(t, "cache", "create", "V", "--cache", "M0", "--core", "Malloc9", "--mode", "wb")
	if r.code != 0 || r.stdout != "V\n" ||
		r.stderr != "blockcache: cache create V: waiting for core bdev \"Malloc9\", which does not exist yet\n" {
		t.Fatalf("cache create on a missing core: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	checkRow(t, d.ok(t, "cache", "list", "V"), "V", "waiting", "-", "-", "M0", "yes", "Malloc9", "no", "-")

	// Both missing: both are named, cache first.
	r = d.cli(t, "cache", "create", "W", "--cache", "NoCache", "--core", "NoCore")
	want := "blockcache: cache create W: waiting for cache bdev \"NoCache\", which does not exist yet\n" +
		"blockcache: cache create W: waiting for core bdev \"NoCore\", which does not exist yet\n"
	if r.code != 0 || r.stderr != want {
		t.Fatalf("cache create on two missing bases: exit %d, stderr %q, want %q", r.code, r.stderr, want)
	}

	d.malloc(t, "Malloc9", 65536, 512)
	checkRow(t, d.ok(t, "cache", "list", "V"), "V", "started", "wb", "4 KiB", "M0", "yes", "Malloc9", "yes", "-")
	// Existing bases: nothing on stderr (ok checks it).
	d.malloc(t, "M1", 16384, 512)
	d.malloc(t, "M2", 65536, 512)
	d.ok(t, "cache", "create", "X", "--cache", "M1", "--core", "M2")
}

// TestCacheCreateBadDevices gives cache create paths it cannot use: each
// fails with a message naming the path and the cause, and leaves no bdev.
func TestCacheCreateBadDevices(t *testing.T) {
	d := startDaemon(t)
	dir := t.TempDir()
	core := imageFile(t, dir, "core.img", 32<<20)
	held := imageFile(t, dir, "held.img", 16<<20)
	d.ok(t, "bdev", "create-file", "Held", held)
	before := d.ok(t, "bdev", "list")
	missing := filepath.Join(dir, "missing.img")
	tests := []struct {
		name  string
		cache string
		want  []string
	}{
		{"missing", missing, []string{"--cache: file bdev V_cache on " + missing + ": No such file or directory (code -2)"}},
		{"directory", dir, []string{"--cache: file bdev V_cache on " + dir + ": Invalid argument (code -22)", "a directory, not a regular file or block device"}},
		{"in use", held, []string{"--cache: file bdev V_cache on " + held + ": Device or resource busy (code -16)", held + " is in use by "}},
		{"too small", imageFile(t, dir, "small.img", 100<<10), []string{"Could not create OCF vbdev", "cache device of 102400 bytes holds no 4096-byte line after metadata: cache device too small",
			"deleted the file bdev(s) it had made: V_cache, V_core"}},
	}
	for _, tc := range tests {
		want := append([]string{"blockcache: cache create V: "}, tc.want...)
		d.fails(t, []string{"cache", "create", "V", "--cache", tc.cache, "--core", core}, want...)
		if got := d.ok(t, "bdev", "list"); got != before {
			t.Errorf("%s: bdev list after the failed create:\n%s\nwant\n%s", tc.name, got, before)
		}
	}
}

// TestBdevCreateFileBuffered: a file bdev is direct by default and buffered
// with --buffered, as bdev_get_bdevs' driver_specific and the saved config
// say (buffered is written only when set, so a direct bdev has SPDK's shape).
func TestBdevCreateFileBuffered(t *testing.T) {
	d := startDaemon(t)
	dir := t.TempDir()
	d.ok(t, "bdev", "create-file", "D", imageFile(t, dir, "d.img", 1<<20))
	d.ok(t, "bdev", "create-file", "B", imageFile(t, dir, "b.img", 1<<20), "--buffered")
	for name, buffered := range map[string]bool{"D": false, "B": true} {
		if out := d.ok(t, "bdev", "list", name, "--json"); strings.Contains(out, `"buffered": true`) != buffered || strings.Contains(out, "direct_refused") {
			t.Errorf("bdev list %s --json: want buffered %v, no direct_refused:\n%s", name, buffered, out)
		}
	}
	cfg := d.ok(t, "config", "save")
	if strings.Count(cfg, `"buffered": true`) != 1 || strings.Contains(cfg, `"buffered": false`) {
		t.Errorf("config save: want one \"buffered\": true (B's) and no false:\n%s", cfg)
	}
}
