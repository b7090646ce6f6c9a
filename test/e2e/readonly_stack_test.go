package e2e

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"blockcache/internal/testutil"
)

// TestReadOnlyBaseThroughWrappers: a delay bdev and an error bdev over an
// aio bdev opened readonly are exported read-only without nbd_start_disk's
// readonly, so nbdinfo sees NBD_FLAG_READ_ONLY and qemu-io refuses to write
// instead of getting an error on every write; reads go through. The
// daemon logs the exports as read-only.
func TestReadOnlyBaseThroughWrappers(t *testing.T) {
	t.Parallel()
	d := StartDaemon(t, DaemonOpts{Bare: true})
	dir := t.TempDir()
	for _, base := range []string{"RoA", "RoB"} {
		p := aioParams(writeFile(t, dir, base+".img", make([]byte, 4<<20)), base)
		p["readonly"] = true
		d.Call(t, "bdev_aio_create", p)
	}
	d.Call(t, "bdev_delay_create", delayParams("RoA", "RoDelay", 10, 10))
	d.Call(t, "bdev_error_create", map[string]any{"base_name": "RoB"})

	for _, name := range []string{"RoDelay", "EE_RoB"} {
		d.Call(t, "nbd_start_disk", map[string]any{"bdev_name": name})
		// The log says what the export is, not what was asked for.
		if line, err := d.stderr.wait("nbd export started\" bdev="+name+" ", 10*time.Second, d.exited); err != nil || !strings.Contains(line, "readonly=true") {
			t.Errorf("export of %s logged %q (%v), want readonly=true", name, line, err)
		}
		var info struct {
			Exports []struct {
				ReadOnly bool `json:"is_read_only"`
			} `json:"exports"`
		}
		out := testutil.Run(t, nil, "nbdinfo", "--json", d.URI(name))
		if err := json.Unmarshal([]byte(out), &info); err != nil || len(info.Exports) != 1 || !info.Exports[0].ReadOnly {
			t.Fatalf("nbdinfo %s: read-only not advertised (%v)\n%s", name, err, out)
		}
		mustFail(t, "qemu-io write to "+name, "qemu-io", "-f", "raw", "-c", "write -P 0 0 4096", d.URI(name))
		testutil.Run(t, nil, "qemu-io", "-r", "-f", "raw", "-c", "read -P 0 0 4096", d.URI(name))
	}
}
