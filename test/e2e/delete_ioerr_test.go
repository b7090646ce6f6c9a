package e2e

import (
	"testing"
	"time"

	"blockcache/internal/testutil"
)

// TestOCFMetadataWriteFailsKeepsVolume: with the cache device failing
// writes, bdev_ocf_create of a second core on the cache and bdev_ocf_delete
// of the exported volume answer -32603 with -5 and lose nothing: the
// create leaves the core bdev free and succeeds once the device works; the
// volume keeps its data and its NBD export, which qemu-io reaches at the
// same URI after the failed delete. A delete that succeeds ends the
// export.
func TestOCFMetadataWriteFailsKeepsVolume(t *testing.T) {
	t.Parallel()
	testutil.RequireTool(t, "qemu-io")
	d := StartDaemon(t, DaemonOpts{Bare: true})
	d.Call(t, "bdev_malloc_create", mallocParams("DelBase", 8, 512))
	d.Call(t, "bdev_malloc_create", mallocParams("DelCore", 16, 512))
	d.Call(t, "bdev_malloc_create", mallocParams("DelCore2", 16, 512))
	d.Call(t, "bdev_error_create", map[string]any{"base_name": "DelBase"})
	d.Call(t, "bdev_ocf_create", ocfParams("DelVol", "wt", "EE_DelBase", "DelCore", 0))
	var uri string
	d.CallInto(t, "nbd_start_disk", map[string]any{"bdev_name": "DelVol"}, &uri)
	qemuIO(t, uri, "write -P 0xa5 0 64k")

	failWrites := map[string]any{"name": "EE_DelBase", "io_type": "write", "error_type": "failure", "num": 1000}
	clear := map[string]any{"name": "EE_DelBase", "io_type": "clear", "error_type": "failure"}
	d.Call(t, "bdev_error_inject_error", failWrites)
	d.expectError(t, "bdev_ocf_create", ocfParams("DelVol2", "wt", "EE_DelBase", "DelCore2", 0), -32603, "Could not create OCF vbdev: -5")
	d.expectError(t, "bdev_ocf_delete", map[string]any{"name": "DelVol"}, -32603, "Could not delete OCF vbdev: -5")
	d.Call(t, "bdev_error_inject_error", clear)

	d.Call(t, "bdev_ocf_create", ocfParams("DelVol2", "wt", "EE_DelBase", "DelCore2", 0))
	deadline := time.Now().Add(10 * time.Second)
	for {
		var disks []struct {
			NBDDevice string `json:"nbd_device"`
		}
		d.CallInto(t, "nbd_get_disks", nil, &disks)
		if len(disks) == 1 && disks[0].NBDDevice == uri {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("nbd_get_disks after the failed delete: %+v, want %s", disks, uri)
		}
		time.Sleep(20 * time.Millisecond)
	}
	qemuIO(t, uri, "read -P 0xa5 0 64k", "write -P 0x5a 64k 64k", "read -P 0x5a 64k 64k")

	expectJSON(t, "bdev_ocf_delete", d.Call(t, "bdev_ocf_delete", map[string]any{"name": "DelVol"}), "true")
	expectJSON(t, "nbd_get_disks after the delete", d.Call(t, "nbd_get_disks", nil), "[]")
	nbdinfoFails(t, uri)
}
