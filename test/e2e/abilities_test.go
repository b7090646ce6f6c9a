package e2e

import (
	"encoding/json"
	"strings"
	"testing"

	"blockcache/internal/testutil"
)

// TestAbilitiesReachClients: what a bdev can do besides reading, writing
// and flushing reaches both of the daemon's faces the same way. A malloc
// bdev and a cache volume over a malloc core discard; a null bdev and a
// volume over a null core do not. bdev_get_bdevs says so in
// supported_io_types (unmap, write_zeroes), and the NBD export of each
// advertises NBD_FLAG_SEND_TRIM exactly then (nbdinfo's can_trim), and
// always write-zeroes (the server writes zero buffers where the bdev has
// none). A trim on the volume that offers it reads back as zeroes.
func TestAbilitiesReachClients(t *testing.T) {
	t.Parallel()
	d := StartDaemon(t, DaemonOpts{Bare: true})
	d.Call(t, "bdev_malloc_create", mallocParams("AbCache", cacheMiB, 512))
	d.Call(t, "bdev_malloc_create", mallocParams("AbCache2", cacheMiB, 512))
	d.Call(t, "bdev_malloc_create", mallocParams("AbMalloc", 16, 512))
	d.Call(t, "bdev_null_create", map[string]any{"name": "AbNull", "num_blocks": 16 << 20 / 512, "block_size": 512})
	d.Call(t, "bdev_ocf_create", ocfParams("AbVolTrim", "wb", "AbCache", "AbMalloc", 0))
	d.Call(t, "bdev_ocf_create", ocfParams("AbVolNoTrim", "wt", "AbCache2", "AbNull", 0))
	d.Call(t, "bdev_malloc_create", mallocParams("AbBare", 8, 512))
	d.Call(t, "bdev_null_create", map[string]any{"name": "AbBareNull", "num_blocks": 8 << 20 / 512, "block_size": 512})

	for _, c := range []struct {
		bdev          string
		unmap, zeroes bool
	}{
		{"AbBare", true, true},
		{"AbBareNull", false, true}, // as SPDK's null bdev
		{"AbVolTrim", true, false},
		{"AbVolNoTrim", false, false},
	} {
		b, raw := d.getBdev(t, c.bdev)
		if io := b.SupportedIOTypes; io["unmap"] != c.unmap || io["write_zeroes"] != c.zeroes {
			t.Errorf("bdev_get_bdevs %s: supported_io_types unmap %v write_zeroes %v, want %v and %v\n%s",
				c.bdev, io["unmap"], io["write_zeroes"], c.unmap, c.zeroes, raw)
		}
		var uri string
		d.CallInto(t, "nbd_start_disk", map[string]any{"bdev_name": c.bdev}, &uri)
		out := testutil.Run(t, nil, "nbdinfo", "--json", uri)
		var info struct {
			Exports []struct {
				CanTrim bool `json:"can_trim"`
				CanZero bool `json:"can_zero"`
			} `json:"exports"`
		}
		if err := json.Unmarshal([]byte(out), &info); err != nil || len(info.Exports) != 1 {
			t.Fatalf("nbdinfo --json %s: %v\n%s", uri, err, out)
		}
		if e := info.Exports[0]; e.CanTrim != c.unmap || !e.CanZero {
			t.Errorf("nbdinfo %s: can_trim %v can_zero %v, want %v and true", c.bdev, e.CanTrim, e.CanZero, c.unmap)
		}
	}

	script := `
import os
buf = os.urandom(1 << 20)
h.pwrite(buf, 0)
h.trim(128 << 10, 256 << 10)  # count, then offset
got = h.pread(1 << 20, 0)
assert got[256 << 10:384 << 10] == bytes(128 << 10), "trimmed range is not zero"
assert got[:256 << 10] == buf[:256 << 10] and got[384 << 10:] == buf[384 << 10:], "trim changed its neighbours"
h.zero(4096, 8192)
assert h.pread(4096, 8192) == bytes(4096)
print("nbdsh ok")
`
	if out := testutil.Run(t, testutil.NbdshEnv(t), "nbdsh", "-u", d.URI("AbVolTrim"), "-c", script); !strings.Contains(out, "nbdsh ok") {
		t.Fatalf("nbdsh on the volume over a malloc core:\n%s", out)
	}
	d.Stop(t)
}
