package e2e

// Restarting the daemon on the same data directory, and what a second
// daemon on the same socket does.

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// qemuIO runs qemu-io commands on uri and fails on a pattern mismatch or a
// command that did not complete.
func qemuIO(t *testing.T, uri string, cmds ...string) {
	t.Helper()
	args := []string{"-f", "raw"}
	for _, c := range cmds {
		args = append(args, "-c", c)
	}
	out := run(t, nil, "qemu-io", append(args, uri)...)
	done := strings.Count(out, "wrote ") + strings.Count(out, "read ")
	if strings.Contains(out, "Pattern verification failed") || done != len(cmds) {
		t.Fatalf("qemu-io %v on %s:\n%s", cmds, uri, out)
	}
}

// TestRestartEmbeddedDefault starts the daemon with nothing but a data
// directory and ports, writes to the default volume, stops it with SIGTERM
// and checks that a restart on the same directory serves the same data.
func TestRestartEmbeddedDefault(t *testing.T) {
	t.Parallel()
	requireTool(t, "qemu-io")
	dataDir := filepath.Join(t.TempDir(), "data")
	d := StartDaemon(t, DaemonOpts{DataDir: dataDir})
	line := d.waitStdout(t, "export cache0: ")
	if want := "export cache0: " + d.URI("cache0"); line != want {
		t.Fatalf("daemon printed %q, want %q", line, want)
	}
	for _, f := range []string{"cache.img", "core.img", "config.json"} {
		if _, err := os.Stat(filepath.Join(dataDir, f)); err != nil {
			t.Fatalf("data dir after the first start: %v", err)
		}
	}
	var vols []struct {
		Name    string `json:"name"`
		Started bool   `json:"started"`
	}
	d.CallInto(t, "bdev_ocf_get_bdevs", nil, &vols)
	if len(vols) != 1 || vols[0].Name != "cache0" || !vols[0].Started {
		t.Fatalf("default volumes: %+v", vols)
	}
	qemuIO(t, d.URI("cache0"),
		"write -P 0x5a 1m 256k",
		"write -P 0xc3 1500m 64k",
		"read -P 0x5a 1m 256k")
	d.Stop(t)

	d2 := StartDaemon(t, DaemonOpts{DataDir: dataDir})
	d2.waitStdout(t, "export cache0: "+d2.URI("cache0"))
	if strings.Contains(d2.Stderr(), "creating the embedded default") {
		t.Fatalf("the restart re-created the embedded default instead of loading the data dir:\n%s", d2.Stderr())
	}
	qemuIO(t, d2.URI("cache0"),
		"read -P 0x5a 1m 256k",
		"read -P 0xc3 1500m 64k",
		"read -P 0 0 1m")
	d2.Stop(t)
}

// TestRestartWriteBackAio builds a write-back volume on file (aio) bdevs
// over RPC in a daemon that persists its state, fills it past the cache so
// dirty data is both in the cache and evicted, stops it with SIGTERM, and
// checks the core file and a restarted daemon.
func TestRestartWriteBackAio(t *testing.T) {
	t.Parallel()
	requireTool(t, "qemu-img")
	dataDir := filepath.Join(t.TempDir(), "data")
	files := t.TempDir()
	cacheFile, coreFile := filepath.Join(files, "cache.bin"), filepath.Join(files, "core.bin")
	for _, f := range []struct {
		path string
		size int64
	}{{cacheFile, 8 << 20}, {coreFile, 32 << 20}} {
		if err := os.WriteFile(f.path, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(f.path, f.size); err != nil {
			t.Fatal(err)
		}
	}
	d := StartDaemon(t, DaemonOpts{DataDir: dataDir})
	d.Call(t, "bdev_aio_create", aioParams(cacheFile, "WbCache"))
	d.Call(t, "bdev_aio_create", aioParams(coreFile, "WbCore"))
	d.Call(t, "bdev_ocf_create", ocfParams("WbVol", "wb", "WbCache", "WbCore", 8))
	var uri string
	d.CallInto(t, "nbd_start_disk", map[string]any{"bdev_name": "WbVol"}, &uri)

	data := randomBytes(3, imageSize)
	img := writeFile(t, t.TempDir(), "image.raw", data)
	run(t, nil, "qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", img, uri)
	if s := d.stats(t, "WbVol"); s.Usage.Dirty.Count == 0 {
		t.Fatalf("no dirty data in the write-back cache before shutdown: %+v", s.Usage)
	}
	// The persisted config names the new volume.
	cfg, err := os.ReadFile(filepath.Join(dataDir, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(cfg, []byte(`"WbVol"`)) || !bytes.Contains(cfg, []byte(`"wb"`)) {
		t.Fatalf("config.json does not hold the wb volume:\n%s", cfg)
	}
	d.Stop(t)

	// Shutdown wrote the dirty data back: the core file alone holds it.
	core, err := os.ReadFile(coreFile)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(core[:imageSize], data) || !bytes.Equal(core[imageSize:], make([]byte, len(core)-imageSize)) {
		t.Fatalf("core file after SIGTERM: %d bytes differ from what was written", countDiff(core[:imageSize], data))
	}

	d2 := StartDaemon(t, DaemonOpts{DataDir: dataDir})
	var bdevs []bdevInfo
	d2.CallInto(t, "bdev_get_bdevs", map[string]any{"name": "WbVol"}, &bdevs)
	var ds ocfDriverSpecific
	if len(bdevs) != 1 || json.Unmarshal(bdevs[0].DriverSpecific, &ds) != nil ||
		ds != (ocfDriverSpecific{CacheDevice: "WbCache", CoreDevice: "WbCore", Mode: "wb", CacheLineSize: 8}) {
		t.Fatalf("WbVol after restart: %+v", bdevs)
	}
	var disks []nbdDisk
	d2.CallInto(t, "nbd_get_disks", nil, &disks)
	if len(disks) != 2 || disks[1] != (nbdDisk{NBDDevice: d2.URI("WbVol"), BdevName: "WbVol"}) {
		t.Fatalf("nbd_get_disks after restart: %+v, want cache0 and WbVol on %s", disks, d2.NBDAddr)
	}
	out := run(t, nil, "qemu-img", "compare", "-f", "raw", "-F", "raw", img, d2.URI("WbVol"))
	if !strings.Contains(out, "Images are identical") {
		t.Fatalf("after restart: %s", out)
	}
	d2.Stop(t)
}

// TestSecondDaemonSameSocket starts a second daemon on a socket in use: it
// must fail with a clear message and a non-zero status, and leave the first
// one serving.
func TestSecondDaemonSameSocket(t *testing.T) {
	t.Parallel()
	d := StartDaemon(t, DaemonOpts{Bare: true})
	second := startProcess(t, DaemonOpts{Bare: true, Sock: d.Sock})
	if code := second.Wait(t, 20*time.Second); code == 0 {
		t.Fatalf("a second daemon on %s exited with status 0\nstderr:\n%s", d.Sock, second.Stderr())
	}
	if msg := second.Stderr(); !strings.Contains(msg, "already listening on "+d.Sock) {
		t.Fatalf("second daemon's message does not say the socket is in use:\n%s", msg)
	}
	if _, err := os.Stat(d.Sock); err != nil {
		t.Fatalf("the first daemon's socket is gone: %v", err)
	}
	d.Call(t, "spdk_get_version", nil)
	d.Stop(t)
}
