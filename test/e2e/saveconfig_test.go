package e2e

// save_config and load_config as rpc.py sends them, and serve --config on
// the saved file, give the same bdevs.

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// comparableBdevs returns bdev_get_bdevs sorted by name (registration
// order follows the config's order, which puts OCF vbdevs after every base
// bdev), without what legitimately differs between two daemons: an OCF
// vbdev gets a new UUID (and so alias) each time it is created, as in SPDK,
// where bdev_ocf_create takes no uuid.
func comparableBdevs(t *testing.T, d *Daemon) string {
	t.Helper()
	var list []map[string]json.RawMessage
	d.CallInto(t, "bdev_get_bdevs", nil, &list)
	slices.SortFunc(list, func(a, b map[string]json.RawMessage) int {
		return strings.Compare(string(a["name"]), string(b["name"]))
	})
	for _, b := range list {
		if string(b["product_name"]) == `"SPDK OCF"` {
			delete(b, "uuid")
			delete(b, "aliases")
		}
	}
	out, err := json.Marshal(list)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// TestSaveConfigLoadConfig saves a daemon's config as rpc.py save_config,
// loads it into a fresh daemon as rpc.py load_config, and starts a third
// with serve --config on the saved file: all three must have the same bdevs.
func TestSaveConfigLoadConfig(t *testing.T) {
	t.Parallel()
	a := StartDaemon(t, DaemonOpts{Bare: true})
	dir := t.TempDir()
	aioFile := filepath.Join(dir, "aio.img")
	if err := os.WriteFile(aioFile, make([]byte, 2<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	a.Call(t, "bdev_malloc_create", mallocParams("SCache", 8, 512))
	a.Call(t, "bdev_malloc_create", mallocParams("SCore", 16, 4096))
	a.Call(t, "bdev_malloc_create", mallocParams("SCore2", 8, 4096))
	a.Call(t, "bdev_ocf_create", ocfParams("SVol", "wa", "SCache", "SCore", 8))
	a.Call(t, "bdev_ocf_create", ocfParams("SVol2", "wa", "SCache", "SCore2", 8))
	a.Call(t, "bdev_ocf_set_cache_mode", map[string]any{"name": "SVol", "mode": "wo"})
	a.Call(t, "bdev_aio_create", aioParams(aioFile, "SAio"))
	a.Call(t, "bdev_null_create", map[string]any{"name": "SNull", "num_blocks": 1024, "block_size": 512})
	a.Call(t, "bdev_malloc_create", mallocParams("SDBase", 1, 512))
	a.Call(t, "bdev_delay_create", map[string]any{"base_bdev_name": "SDBase", "name": "SDelay",
		"avg_read_latency": 1, "p99_read_latency": 2, "avg_write_latency": 3, "p99_write_latency": 4})
	a.Call(t, "bdev_malloc_create", mallocParams("SEBase", 1, 512))
	a.Call(t, "bdev_error_create", map[string]any{"base_name": "SEBase"})
	// Wrappers over an OCF vbdev: the config must create each bdev after
	// the ones it is built on.
	a.Call(t, "bdev_delay_create", map[string]any{"base_bdev_name": "SVol2", "name": "SSlowVol",
		"avg_read_latency": 1, "p99_read_latency": 2, "avg_write_latency": 3, "p99_write_latency": 4})
	a.Call(t, "bdev_error_create", map[string]any{"base_name": "SSlowVol"})
	a.Call(t, "nbd_start_disk", map[string]any{"bdev_name": "SVol"})
	saved, err := a.Client(t).SaveConfig()
	if err != nil {
		t.Fatal(err)
	}
	want := comparableBdevs(t, a)
	for _, s := range []string{`"bdev_ocf_create"`, `"mode": "wo"`, `"bdev_delay_create"`, `"bdev_error_create"`, `"nbd_start_disk"`} {
		if !bytes.Contains(saved, []byte(s)) {
			t.Fatalf("save_config output lacks %s:\n%s", s, saved)
		}
	}

	a.Stop(t) // its aio bdev holds aio.img, which b and c take in turn
	b := StartDaemon(t, DaemonOpts{Bare: true})
	if skipped, err := b.Client(t).LoadConfig(saved); err != nil || len(skipped) != 0 {
		t.Fatalf("load_config: skipped %v, err %v", skipped, err)
	}
	if got := comparableBdevs(t, b); got != want {
		t.Fatalf("bdevs after load_config differ:\n got %s\nwant %s", got, want)
	}
	var disks []nbdDisk
	b.CallInto(t, "nbd_get_disks", nil, &disks)
	if len(disks) != 1 || disks[0] != (nbdDisk{NBDDevice: b.URI("SVol"), BdevName: "SVol"}) {
		t.Fatalf("exports after load_config: %+v", disks)
	}
	qemuIO(t, b.URI("SVol"), "write -P 0x21 0 64k", "read -P 0x21 0 64k")
	// Loading it again fails on the first existing name.
	if _, err := b.Client(t).LoadConfig(saved); err == nil {
		t.Fatal("load_config of the same config twice succeeded")
	}
	resaved, err := b.Client(t).SaveConfig()
	if err != nil {
		t.Fatal(err)
	}

	b.Stop(t)
	cfgFile := writeFile(t, dir, "saved.json", saved)
	c := StartDaemon(t, DaemonOpts{Bare: true, Config: cfgFile})
	if got := comparableBdevs(t, c); got != want {
		t.Fatalf("bdevs of serve --config saved.json differ:\n got %s\nwant %s", got, want)
	}
	c.waitStdout(t, "export SVol: "+c.URI("SVol"))
	// Apart from the NBD address, the three save the same config.
	norm := func(b []byte, d *Daemon) string { return strings.ReplaceAll(string(b), d.NBDAddr, "ADDR") }
	cSaved, err := c.Client(t).SaveConfig()
	if err != nil {
		t.Fatal(err)
	}
	if norm(resaved, b) != norm(saved, a) || norm(cSaved, c) != norm(saved, a) {
		t.Fatalf("save_config after reloading differs:\noriginal:\n%s\nafter load_config:\n%s\nafter --config:\n%s", saved, resaved, cSaved)
	}
	c.Stop(t)
}
