package e2e

// rpc.py compatibility of the NBD export methods (TestRPCCompat).

import (
	"fmt"
	"strings"
	"testing"

	"blockcache/internal/testutil"
)

// compatNBD: nbd_start_disk, nbd_get_disks, nbd_stop_disk and the nbd
// config, with qemu-io and nbdinfo as the clients.
func compatNBD(t *testing.T, d *Daemon) {
	d.Call(t, "bdev_malloc_create", mallocParams("N0", 4, 512))
	var uri string
	d.CallInto(t, "nbd_start_disk", map[string]any{"bdev_name": "N0"}, &uri)
	if uri != d.URI("N0") {
		t.Fatalf("nbd_start_disk returned %q, want %q", uri, d.URI("N0"))
	}
	disk := fmt.Sprintf(`[{"nbd_device":%q,"bdev_name":"N0"}]`, uri)
	expectJSON(t, "nbd_get_disks", d.Call(t, "nbd_get_disks", nil), disk)
	expectJSON(t, "nbd_get_disks one", d.Call(t, "nbd_get_disks", map[string]any{"nbd_device": uri}), disk)
	d.expectError(t, "nbd_get_disks", map[string]any{"nbd_device": "/dev/nbd9"}, -19, "No such device")
	expectJSON(t, "nbd config", d.Call(t, "framework_get_config", map[string]any{"name": "nbd", "with_batches": false}),
		fmt.Sprintf(`[{"method":"nbd_start_disk","params":{"bdev_name":"N0","nbd_device":%q}}]`, uri))
	d.expectError(t, "nbd_start_disk", map[string]any{"bdev_name": "N0"}, -16, "Device or resource busy")
	d.expectError(t, "nbd_start_disk", map[string]any{"bdev_name": "Nope"}, -19, "No such device")
	d.expectError(t, "nbd_start_disk", map[string]any{}, -32603, "spdk_json_decode_object failed")
	// Kernel NBD devices are refused wherever the node exists or not,
	// with the URI the export is reached at instead.
	if je := d.expectError(t, "nbd_start_disk", map[string]any{"bdev_name": "N0", "nbd_device": "/dev/nbd0"}, -19,
		"kernel NBD devices are not supported: /dev/nbd0"); !strings.Contains(je.Data, "own NBD server") || !strings.Contains(je.Data, d.URI("N0")) {
		t.Fatalf("nbd_start_disk on /dev/nbd0: data %q, want blockcache's NBD server and %s", je.Data, d.URI("N0"))
	}
	qemuIO(t, uri, "write -P 0x77 0 64k", "read -P 0x77 0 64k")
	expectJSON(t, "nbd_stop_disk", d.Call(t, "nbd_stop_disk", map[string]any{"nbd_device": uri}), "true")
	d.expectError(t, "nbd_stop_disk", map[string]any{"nbd_device": uri}, -19, "No such device")
	d.expectError(t, "nbd_stop_disk", map[string]any{"nbd_device": "foo"}, -19, "invalid nbd device")
	d.expectError(t, "nbd_stop_disk", map[string]any{}, -32603, "spdk_json_decode_object failed")
	expectJSON(t, "nbd_get_disks after stop", d.Call(t, "nbd_get_disks", nil), "[]")
	if out, err := testutil.RunErr(t, nil, "nbdinfo", uri); err == nil {
		t.Fatalf("nbdinfo of a stopped export succeeded:\n%s", out)
	}
	d.expectClaimed(t, "N0", false)
}
