package e2e

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"blockcache/internal/testutil"
)

// TestRemoteCoreServerErrors: a server that fails writes (nbdkit's error
// filter) makes writes through a wt volume fail with EIO, counted by
// OCF as core errors; reads still work and the daemon stays up.
func TestRemoteCoreServerErrors(t *testing.T) {
	srv := nbdkitUnix(t, "--filter=error", "memory", "16M", "error-pwrite=EIO", "error-pwrite-rate=100%")
	d := StartDaemon(t, DaemonOpts{Bare: true})
	d.Call(t, "bdev_nbd_client_create", map[string]any{"name": "Remote0", "uri": srv.uri})
	uri := d.cacheOver(t, "Vol0", "wt", "Cache0", 8, "Remote0")
	env := testutil.NbdshEnv(t)
	out, err := testutil.RunErr(t, env, "nbdsh", "-u", uri, "-c", "h.pwrite(b'x' * 4096, 0)")
	if err == nil || !strings.Contains(out, "Input/output error") {
		t.Fatalf("write through a failing core: %v\n%s", err, out)
	}
	testutil.Run(t, env, "nbdsh", "-u", uri, "-c", "assert h.pread(4096, 0) == bytes(4096)")
	var errs struct {
		Errors struct {
			CoreWr statLeaf `json:"core_volume_wr"`
		} `json:"errors"`
	}
	d.CallInto(t, "bdev_ocf_get_stats", map[string]any{"name": "Vol0"}, &errs)
	if errs.Errors.CoreWr.Count == 0 {
		t.Fatalf("core write errors not counted: %+v", errs.Errors)
	}
	if st, _ := d.nbdClient(t, "Remote0"); st.State != "connected" || st.Reconnects != 0 {
		t.Fatalf("server errors changed the connection: %+v", st)
	}
}

// TestRemoteCoreSilentServer: a server that never answers reads (nbdkit's
// delay filter, 60 s) makes each read time out after io_timeout_sec, the
// connection drop and come back, and the read fail with EIO after
// fast_io_fail_timeout_sec; nothing hangs, and the bdev deletes promptly.
func TestRemoteCoreSilentServer(t *testing.T) {
	srv := nbdkitUnix(t, "--filter=delay", "memory", "16M", "rdelay=60")
	d := StartDaemon(t, DaemonOpts{Bare: true})
	d.Call(t, "bdev_nbd_client_create", map[string]any{"name": "Remote0", "uri": srv.uri,
		"io_timeout_sec": 1, "fast_io_fail_timeout_sec": 2, "reconnect_delay_sec": 1})
	var uri string
	d.CallInto(t, "nbd_start_disk", map[string]any{"bdev_name": "Remote0"}, &uri)
	env := testutil.NbdshEnv(t)
	start := time.Now()
	out, err := testutil.RunErr(t, env, "nbdsh", "-u", uri, "-c", "h.pread(4096, 0)")
	if err == nil || !strings.Contains(out, "Input/output error") {
		t.Fatalf("read from a silent server: %v\n%s", err, out)
	}
	if el := time.Since(start); el < time.Second || el > 10*time.Second {
		t.Fatalf("the read failed after %v, want after the 1 s IO timeout and the 2 s fast_io_fail", el)
	}
	// Writes are not delayed: the device still works for them.
	testutil.Run(t, env, "nbdsh", "-u", uri, "-c", "h.pwrite(b'y' * 4096, 0)")
	if st, _ := d.nbdClient(t, "Remote0"); st.Reconnects < 1 {
		t.Fatalf("no reconnect after a timeout: %+v", st)
	}
	d.Call(t, "nbd_stop_disk", map[string]any{"nbd_device": uri})
	start = time.Now()
	d.Call(t, "bdev_nbd_client_delete", map[string]any{"name": "Remote0"})
	if el := time.Since(start); el > 5*time.Second {
		t.Fatalf("delete took %v", el)
	}
}

// TestRemoteCoreLost: after ctrlr_loss_timeout_sec without the server the
// NBD client bdev is removed and the wb volume on it hot-removed, its
// dirty data kept in the cache and its vbdev waiting; once the server is
// back, creating the bdev again brings the volume and its data back, its
// export with it, and deleting the volume writes it to the server. (TestRemoteCoreComeback
// checks the whole image.)
func TestRemoteCoreLost(t *testing.T) {
	image := filepath.Join(t.TempDir(), "core.img")
	writeFile(t, filepath.Dir(image), "core.img", make([]byte, 16<<20))
	srv := nbdkitUnix(t, "file", image)
	d := StartDaemon(t, DaemonOpts{Bare: true})
	create := map[string]any{"name": "Remote0", "uri": srv.uri, "ctrlr_loss_timeout_sec": 2}
	d.Call(t, "bdev_nbd_client_create", create)
	uri := d.cacheOver(t, "Vol0", "wb", "Cache0", 8, "Remote0")
	env := testutil.NbdshEnv(t)
	testutil.Run(t, env, "nbdsh", "-u", uri, "-c", "h.pwrite(b'\\x5a' * 65536, 1 << 20)")

	srv.kill()
	waitFor(t, 15*time.Second, "Remote0 removed after ctrlr_loss_timeout_sec", func() bool {
		_, ok := d.nbdClient(t, "Remote0")
		return !ok
	})
	waitFor(t, 5*time.Second, "Vol0 hot-removed", func() bool {
		_, err := d.Client(t).Call("bdev_get_bdevs", map[string]any{"name": "Vol0"})
		return err != nil
	})
	if !strings.Contains(d.Stderr(), "ctrlr_loss_timeout_sec 2") {
		t.Fatalf("the log does not say why Remote0 went:\n%s", d.Stderr())
	}

	if vb := d.ocfBdevs(t, "Vol0"); len(vb) != 1 || vb[0].Started {
		t.Fatalf("Vol0 while its core is gone: %+v, want waiting", vb)
	}

	srv.start()
	// The cache kept running with the core detached and its dirty data:
	// the bdev back, Vol0 starts again by itself.
	d.Call(t, "bdev_nbd_client_create", create)
	waitFor(t, 5*time.Second, "Vol0 back", func() bool {
		_, err := d.Client(t).Call("bdev_get_bdevs", map[string]any{"name": "Vol0"})
		return err == nil
	})
	var stats ocfStats
	d.CallInto(t, "bdev_ocf_get_stats", map[string]any{"name": "Vol0"}, &stats)
	if stats.Usage.Dirty.Count == 0 {
		t.Fatalf("no dirty data after the core came back: %+v", stats.Usage)
	}
	nbdinfoWorks(t, uri) // the pending export starts with the volume
	testutil.Run(t, env, "nbdsh", "-u", uri, "-c", "assert h.pread(65536, 1 << 20) == b'\\x5a' * 65536")
	d.Call(t, "bdev_ocf_delete", map[string]any{"name": "Vol0"})
	got := readExport(t, srv.uri)
	if !bytes.Equal(got[1<<20:1<<20+65536], bytes.Repeat([]byte{0x5a}, 65536)) {
		t.Fatalf("the dirty data did not reach the server: %x...", got[1<<20:1<<20+16])
	}
}
