package e2e

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestRemotePendingExportAtStart: a wb volume on an NBD client core
// (qemu-nbd on an image file), with dirty data in its cache file and an
// export, is saved by the daemon; the daemon restarts while the server is
// down. The export is pending: nbd_get_disks does not list it (as SPDK),
// with include_pending it does, and so does blockcache export list,
// config.json keeps it, and the log says why. Once the server is up the volume starts and its export with it,
// within seconds, with one info line: nbdinfo reaches it and qemu-io
// reads the dirty data and the image's.
func TestRemotePendingExportAtStart(t *testing.T) {
	image := writeFile(t, t.TempDir(), "core.img", bytes.Repeat([]byte{0x5a}, 16<<20))
	srv := qemuNBDUnix(t, image)
	files := sparseFiles(t, map[string]int64{"cache.bin": 32 << 20})
	dataDir := filepath.Join(t.TempDir(), "data")
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	writeFile(t, dataDir, "config.json", []byte(`{"subsystems":[]}`)) // no embedded default volume
	opts := DaemonOpts{DataDir: dataDir, Args: []string{"--shutdown-flush=false"}}

	d := StartDaemon(t, opts)
	d.Call(t, "bdev_nbd_client_create", map[string]any{"name": "Remote0", "uri": srv.uri, "reconnect_delay_sec": 1})
	d.Call(t, "bdev_aio_create", aioParams(filepath.Join(files, "cache.bin"), "Cache0"))
	d.Call(t, "bdev_ocf_create", ocfParams("Vol0", "wb", "Cache0", "Remote0", 0))
	var uri string
	d.CallInto(t, "nbd_start_disk", map[string]any{"bdev_name": "Vol0"}, &uri)
	qemuIO(t, uri, "write -P 0x33 64k 64k")
	d.Stop(t)
	srv.kill()
	if onDisk, err := os.ReadFile(image); err != nil || onDisk[64<<10] != 0x5a {
		t.Fatalf("the wb write reached the image file (err %v): the test proves nothing", err)
	}

	d = StartDaemon(t, opts)
	uri = d.URI("Vol0")
	expectJSON(t, "nbd_get_disks with the export pending", d.Call(t, "nbd_get_disks", nil), "[]")
	var all []struct {
		NBDDevice string `json:"nbd_device"`
		BdevName  string `json:"bdev_name"`
		State     string `json:"state"`
		Pending   string `json:"pending"`
	}
	d.CallInto(t, "nbd_get_disks", map[string]any{"include_pending": true}, &all)
	if len(all) != 1 || all[0].NBDDevice != uri || all[0].State != "pending" || !strings.Contains(all[0].Pending, `waiting for its core bdev "Remote0"`) {
		t.Fatalf("nbd_get_disks include_pending: %+v, want %s pending for its core", all, uri)
	}
	if out := d.cliOut(t, "export", "list"); !strings.Contains(out, "Vol0") || !strings.Contains(out, `pending: OCF vbdev "Vol0" is waiting for its core bdev "Remote0"`) {
		t.Fatalf("blockcache export list does not show the pending export and why:\n%s", out)
	}
	d.expectError(t, "nbd_start_disk", map[string]any{"bdev_name": "Vol0"}, -16, "Device or resource busy")
	if saved, err := os.ReadFile(filepath.Join(dataDir, "config.json")); err != nil || !strings.Contains(string(saved), `"nbd_start_disk"`) {
		t.Fatalf("config.json lost the pending export (%v):\n%s", err, saved)
	}
	if !strings.Contains(d.Stderr(), "nbd export pending") || strings.Contains(d.Stderr(), "config entry skipped") {
		t.Fatalf("the log does not say the export is pending, or says it was skipped:\n%s", d.Stderr())
	}

	srv.start()
	start := time.Now()
	nbdinfoWorks(t, uri)
	t.Logf("export reachable %v after the server started", time.Since(start).Round(time.Millisecond))
	qemuIO(t, uri, "read -P 0x33 64k 64k", "read -P 0x5a 0 64k", "read -P 0x5a 128k 1M")
	if n := strings.Count(d.Stderr(), "nbd export started: its bdev registered"); n != 1 {
		t.Fatalf("%d export start lines logged, want 1:\n%s", n, d.Stderr())
	}
	expectJSON(t, "nbd_get_disks once started", d.Call(t, "nbd_get_disks", nil),
		`[{"nbd_device":"`+uri+`","bdev_name":"Vol0"}]`)
	d.Stop(t)
}
