package e2e

// rpc.py compatibility of the base and wrapper bdev methods
// (TestRPCCompat): malloc with bdev_get_bdevs' object and its config
// entry, aio, null, delay and error.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"blockcache/internal/testutil"
)

// compatMalloc: malloc create and delete, auto-naming, bdev_get_bdevs'
// object (keys in SPDK's order, aliases, supported IO types), its timeout,
// and the config entry.
func compatMalloc(t *testing.T, d *Daemon) {
	var name string
	d.CallInto(t, "bdev_malloc_create", map[string]any{"num_blocks": 2048, "block_size": 512, "md_interleave": false, "dif_is_head_of_md": false}, &name)
	if name != "Malloc0" {
		t.Fatalf("auto-named malloc bdev %q, want Malloc0", name)
	}
	const id = "4d1c7e3a-2b3f-4c5d-9e8f-0a1b2c3d4e5f"
	p := mallocParams("M1", 8, 512)
	p["uuid"] = strings.ToUpper(id)
	d.CallInto(t, "bdev_malloc_create", p, &name)
	if name != "M1" {
		t.Fatalf("bdev_malloc_create returned %q", name)
	}
	d.expectError(t, "bdev_malloc_create", mallocParams("M1", 8, 512), -17, "File exists")
	bad := mallocParams("M2", 8, 512)
	bad["foo"] = 1
	d.expectError(t, "bdev_malloc_create", bad, -32603, "spdk_json_decode_object failed")
	d.expectError(t, "bdev_malloc_create", mallocParams("M2", 8, 1000), -22, "Invalid argument")

	b, raw := d.getBdev(t, "M1")
	wantKeys := []string{"name", "aliases", "product_name", "block_size", "num_blocks",
		"preferred_write_alignment", "preferred_write_granularity", "optimal_write_size",
		"preferred_unmap_alignment", "preferred_unmap_granularity", "uuid", "assigned_rate_limits",
		"claimed", "zoned", "supported_io_types", "driver_specific"}
	if k := objectKeys(t, raw); !slices.Equal(k, wantKeys) {
		t.Fatalf("bdev object keys\n got %v\nwant %v", k, wantKeys)
	}
	if b.Name != "M1" || b.ProductName != "Malloc disk" || b.BlockSize != 512 || b.NumBlocks != 16384 ||
		b.UUID != id || !slices.Equal(b.Aliases, []string{id}) || b.Claimed ||
		!b.SupportedIOTypes["read"] || !b.SupportedIOTypes["write"] || !b.SupportedIOTypes["flush"] ||
		string(b.DriverSpecific) != "{}" {
		t.Fatalf("bdev_get_bdevs M1: %s", raw)
	}
	ioKeys := objectKeys(t, member(t, raw, "supported_io_types"))
	wantIO := []string{"read", "write", "unmap", "flush", "reset", "nvme_admin", "nvme_io", "nvme_io_md", "write_zeroes",
		"zcopy", "get_zone_info", "zone_management", "zone_append", "compare", "compare_and_write", "abort",
		"seek_hole", "seek_data", "copy", "nvme_iov_md", "nvme_nssr", "write_uncorrectable"}
	if !slices.Equal(ioKeys, wantIO) {
		t.Fatalf("supported_io_types keys %v", ioKeys)
	}
	if byAlias, rawAlias := d.getBdev(t, id); byAlias.Name != "M1" || !bytes.Equal(rawAlias, raw) {
		t.Fatalf("bdev_get_bdevs by alias %s: %s", id, rawAlias)
	}
	// A bdev named by its own UUID gets no alias.
	const selfID = "0b9a4c1e-7f6d-4e2a-8c3b-5d4e6f708192"
	p = mallocParams(selfID, 1, 512)
	p["uuid"] = selfID
	d.Call(t, "bdev_malloc_create", p)
	if b, raw := d.getBdev(t, selfID); b.UUID != selfID || len(b.Aliases) != 0 || b.Aliases == nil {
		t.Fatalf("bdev named by its UUID: %s, want aliases []", raw)
	}
	d.Call(t, "bdev_malloc_delete", map[string]any{"name": selfID})
	d.expectError(t, "bdev_get_bdevs", map[string]any{"name": "NoSuchBdev"}, -19, "No such device")
	d.expectError(t, "bdev_get_bdevs", map[string]any{"name": "M1", "bogus": 1}, -32603, "spdk_json_decode_object failed")

	// timeout: absent after the timeout, or found once it appears.
	start := time.Now()
	d.expectError(t, "bdev_get_bdevs", map[string]any{"name": "Late", "timeout": 300}, -19, "No such device")
	if el := time.Since(start); el < 300*time.Millisecond {
		t.Fatalf("bdev_get_bdevs with timeout 300 ms answered after %v", el)
	}
	other := d.Dial(t)
	type result struct {
		res json.RawMessage
		err error
	}
	waited := make(chan result, 1)
	go func() {
		res, err := other.Call("bdev_get_bdevs", map[string]any{"name": "Late", "timeout": 10000})
		waited <- result{res, err}
	}()
	time.Sleep(200 * time.Millisecond)
	d.Call(t, "bdev_malloc_create", mallocParams("Late", 1, 512))
	select {
	case r := <-waited:
		var got []bdevInfo
		if r.err != nil || json.Unmarshal(r.res, &got) != nil || len(got) != 1 || got[0].Name != "Late" {
			t.Fatalf("bdev_get_bdevs waiting for Late: %s, %v", r.res, r.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("bdev_get_bdevs with a timeout did not return once the bdev appeared")
	}

	cfg := d.configEntry(t, "bdev_malloc_create", "name", "M1")
	wantCfg := []string{"name", "num_blocks", "block_size", "physical_block_size", "uuid", "optimal_io_boundary",
		"md_size", "dif_type", "dif_is_head_of_md", "dif_pi_format", "numa_id"}
	if k := objectKeys(t, cfg); !slices.Equal(k, wantCfg) {
		t.Fatalf("malloc config keys\n got %v\nwant %v", k, wantCfg)
	}
	if !strings.Contains(string(cfg), `"uuid":"`+id+`"`) || !strings.Contains(string(cfg), `"num_blocks":16384`) {
		t.Fatalf("malloc config entry: %s", cfg)
	}

	expectJSON(t, "bdev_malloc_delete", d.Call(t, "bdev_malloc_delete", map[string]any{"name": "Malloc0"}), "true")
	d.Call(t, "bdev_malloc_delete", map[string]any{"name": "Late"})
	d.expectError(t, "bdev_malloc_delete", map[string]any{"name": "Malloc0"}, -19, "No such device")
	if names := d.bdevNames(t); !slices.Equal(names, []string{"M1"}) {
		t.Fatalf("bdevs after deletes: %v", names)
	}
}

// compatAio: aio bdevs on files in dir, with and without block_size.
func compatAio(t *testing.T, d *Daemon, files string) {
	f := filepath.Join(files, "aio0.img")
	if err := os.WriteFile(f, make([]byte, 4<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	var name string
	d.CallInto(t, "bdev_aio_create", aioParams(f, "Aio0"), &name)
	if name != "Aio0" {
		t.Fatalf("bdev_aio_create returned %q", name)
	}
	b, raw := d.getBdev(t, "Aio0")
	if b.ProductName != "AIO disk" || b.BlockSize != 512 || b.NumBlocks != 8192 {
		t.Fatalf("aio bdev: %s", raw)
	}
	expectJSON(t, "aio driver_specific", b.DriverSpecific,
		fmt.Sprintf(`{"aio":{"filename":%q,"block_size_override":false,"readonly":false,"fallocate":false,"nowait":false}}`, f))
	d.expectError(t, "bdev_aio_create", aioParams(f, "Aio0"), -17, "File exists")
	if je := d.CallErr(t, "bdev_aio_create", aioParams(filepath.Join(files, "missing.img"), "Aio1")); je.Code != -19 && je.Code != -2 {
		t.Fatalf("bdev_aio_create of a missing file: %+v, want code -19 or -2", je)
	}
	// A second bdev needs a file of its own: Aio0 holds aio0.img.
	f4k := filepath.Join(files, "aio4k.img")
	if err := os.WriteFile(f4k, make([]byte, 4<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	p := aioParams(f4k, "Aio4k")
	p["block_size"] = 4096
	d.Call(t, "bdev_aio_create", p)
	if b, raw := d.getBdev(t, "Aio4k"); b.BlockSize != 4096 || b.NumBlocks != 1024 || !strings.Contains(string(b.DriverSpecific), `"block_size_override":true`) {
		t.Fatalf("aio bdev with block_size 4096: %s", raw)
	}
	cfg := d.configEntry(t, "bdev_aio_create", "name", "Aio4k")
	if k := objectKeys(t, cfg); !slices.Equal(k, []string{"name", "block_size", "filename", "readonly", "fallocate", "uuid", "nowait"}) {
		t.Fatalf("aio config keys %v", k)
	}
	if k := objectKeys(t, d.configEntry(t, "bdev_aio_create", "name", "Aio0")); !slices.Equal(k, []string{"name", "filename", "readonly", "fallocate", "uuid", "nowait"}) {
		t.Fatalf("aio config keys without block_size %v", k)
	}
	bad := aioParams(f, "Aio2")
	bad["bogus"] = true
	d.expectError(t, "bdev_aio_create", bad, -32603, "spdk_json_decode_object failed")
	d.expectError(t, "bdev_malloc_delete", map[string]any{"name": "Aio0"}, -19, "No such device")
	expectJSON(t, "bdev_aio_delete", d.Call(t, "bdev_aio_delete", map[string]any{"name": "Aio0"}), "true")
	d.Call(t, "bdev_aio_delete", map[string]any{"name": "Aio4k"})
	d.expectError(t, "bdev_aio_delete", map[string]any{"name": "Aio0"}, -19, "No such device")
}

// compatNull: null bdevs.
func compatNull(t *testing.T, d *Daemon) {
	var name string
	d.CallInto(t, "bdev_null_create", map[string]any{"name": "Null0", "num_blocks": 2048, "block_size": 512, "dif_is_head_of_md": false}, &name)
	if name != "Null0" {
		t.Fatalf("bdev_null_create returned %q", name)
	}
	if b, raw := d.getBdev(t, "Null0"); b.ProductName != "Null disk" || b.NumBlocks != 2048 || b.BlockSize != 512 {
		t.Fatalf("null bdev: %s", raw)
	}
	d.expectError(t, "bdev_null_create", map[string]any{"num_blocks": 2048, "block_size": 512}, -32603, "spdk_json_decode_object failed")
	d.expectError(t, "bdev_null_create", map[string]any{"name": "Null0", "num_blocks": 2048, "block_size": 512}, -17, "File exists")
	expectJSON(t, "bdev_null_delete", d.Call(t, "bdev_null_delete", map[string]any{"name": "Null0"}), "true")
	d.expectError(t, "bdev_null_delete", map[string]any{"name": "Null0"}, -19, "No such device")
}

// compatDelay: a delay bdev claims its base, updates its latency and
// releases the base when deleted.
func compatDelay(t *testing.T, d *Daemon) {
	d.Call(t, "bdev_malloc_create", mallocParams("DBase", 4, 512))
	lat := map[string]any{"base_bdev_name": "DBase", "name": "Delay0",
		"avg_read_latency": 10, "p99_read_latency": 20, "avg_write_latency": 30, "p99_write_latency": 40}
	var name string
	d.CallInto(t, "bdev_delay_create", lat, &name)
	if name != "Delay0" {
		t.Fatalf("bdev_delay_create returned %q", name)
	}
	d.expectClaimed(t, "DBase", true)
	if b, raw := d.getBdev(t, "Delay0"); b.NumBlocks != 8192 || b.Claimed {
		t.Fatalf("delay bdev: %s", raw)
	}
	lat["name"] = "Delay1"
	// SPDK's bdev_open refuses a claimed bdev with -EPERM.
	d.expectError(t, "bdev_delay_create", lat, -1, "Operation not permitted")
	expectJSON(t, "bdev_delay_update_latency",
		d.Call(t, "bdev_delay_update_latency", map[string]any{"delay_bdev_name": "Delay0", "latency_type": "avg_read", "latency_us": 15}), "true")
	if cfg := d.configEntry(t, "bdev_delay_create", "name", "Delay0"); !strings.Contains(string(cfg), `"avg_read_latency":15`) {
		t.Fatalf("delay config after update: %s", cfg)
	}
	d.expectError(t, "bdev_delay_update_latency", map[string]any{"delay_bdev_name": "Delay0", "latency_type": "sideways", "latency_us": 15}, -22, "Invalid argument")
	d.expectError(t, "bdev_delay_update_latency", map[string]any{"delay_bdev_name": "NoDelay", "latency_type": "avg_read", "latency_us": 15}, -19, "No such device")
	expectJSON(t, "bdev_delay_delete", d.Call(t, "bdev_delay_delete", map[string]any{"name": "Delay0"}), "true")
	d.expectError(t, "bdev_delay_delete", map[string]any{"name": "Delay0"}, -19, "No such device")
	d.expectClaimed(t, "DBase", false)
	d.Call(t, "bdev_malloc_delete", map[string]any{"name": "DBase"})
}

// compatError: an error bdev fails the IO it is armed for, through NBD.
func compatError(t *testing.T, d *Daemon) {
	d.Call(t, "bdev_malloc_create", mallocParams("EBase", 1, 512))
	var name string
	d.CallInto(t, "bdev_error_create", map[string]any{"base_name": "EBase"}, &name)
	if name != "EE_EBase" {
		t.Fatalf("bdev_error_create returned %q, want EE_EBase", name)
	}
	d.expectClaimed(t, "EBase", true)
	expectJSON(t, "bdev_error_inject_error", d.Call(t, "bdev_error_inject_error",
		map[string]any{"name": "EE_EBase", "io_type": "write", "error_type": "failure", "num": 1}), "true")
	d.expectError(t, "bdev_error_inject_error", map[string]any{"name": "EE_Nope", "io_type": "write", "error_type": "failure"}, -19, "No such device")
	d.expectError(t, "bdev_error_inject_error", map[string]any{"name": "EE_EBase", "io_type": "sideways", "error_type": "failure"}, -22, "Invalid argument")
	// The armed failure hits the first write through NBD, not the second.
	var uri string
	d.CallInto(t, "nbd_start_disk", map[string]any{"bdev_name": "EE_EBase"}, &uri)
	out, _ := testutil.RunErr(t, nil, "qemu-io", "-f", "raw", "-c", "write -P 0x42 0 4k", uri)
	if !strings.Contains(out, "write failed") {
		t.Fatalf("a write after bdev_error_inject_error did not fail:\n%s", out)
	}
	qemuIO(t, uri, "write -P 0x42 0 4k", "read -P 0x42 0 4k")
	d.Call(t, "nbd_stop_disk", map[string]any{"nbd_device": uri})
	expectJSON(t, "bdev_error_delete", d.Call(t, "bdev_error_delete", map[string]any{"name": "EE_EBase"}), "true")
	d.expectError(t, "bdev_error_delete", map[string]any{"name": "EE_EBase"}, -19, "No such device")
	d.expectClaimed(t, "EBase", false)
	d.Call(t, "bdev_malloc_delete", map[string]any{"name": "EBase"})
}
