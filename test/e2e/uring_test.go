package e2e

// bdev_uring_create and bdev_uring_delete as rpc.py sends them, and uring
// bdevs carrying a cached volume through save_config and load_config.

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// uringParams are what rpc.py sends for `bdev_uring_create FILE NAME`.
func uringParams(file, name string) map[string]any {
	return map[string]any{"filename": file, "name": name}
}

// uringCompat is TestRPCCompat's uring subtest: results, bdev_get_bdevs,
// the config entry and the errors as SPDK's uring module gives them.
func uringCompat(t *testing.T, d *Daemon, files string) {
	f := filepath.Join(files, "uring0.img")
	if err := os.WriteFile(f, make([]byte, 4<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	rings := uringFds(t, d)
	var name string
	d.CallInto(t, "bdev_uring_create", uringParams(f, "Uring0"), &name)
	if name != "Uring0" {
		t.Fatalf("bdev_uring_create returned %q", name)
	}
	if n := uringFds(t, d); n != rings+1 {
		t.Fatalf("the daemon has %d io_uring instances after bdev_uring_create, want %d", n, rings+1)
	}
	b, raw := d.getBdev(t, "Uring0")
	if b.ProductName != "URING bdev" || b.BlockSize != 512 || b.NumBlocks != 8192 {
		t.Fatalf("uring bdev: %s", raw)
	}
	expectJSON(t, "uring driver_specific", b.DriverSpecific, fmt.Sprintf(`{"uring":{"filename":%q}}`, f))
	cfg := d.configEntry(t, "bdev_uring_create", "name", "Uring0")
	expectJSON(t, "uring config entry", cfg, fmt.Sprintf(`{"name":"Uring0","block_size":512,"filename":%q,"uuid":%q}`, f, b.UUID))
	if k := objectKeys(t, cfg); !slices.Equal(k, []string{"name", "block_size", "filename", "uuid"}) {
		t.Fatalf("uring config keys %v", k)
	}
	d.expectError(t, "bdev_uring_create", uringParams(f, "Uring0"), -17, "File exists")
	// The file is held by Uring0.
	if je := d.CallErr(t, "bdev_uring_create", uringParams(f, "Uring1")); je.Code != -16 || !strings.Contains(je.Data, f) {
		t.Fatalf("a second uring bdev on %s: %+v, want -16 naming the file", f, je)
	}
	d.expectError(t, "bdev_uring_create", uringParams(filepath.Join(files, "missing.img"), "Uring1"), -2, "No such file or directory")
	f4k := filepath.Join(files, "uring4k.img")
	if err := os.WriteFile(f4k, make([]byte, 4<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	const id = "8a1b2c3d-0000-4000-8000-00000000abcd"
	p := uringParams(f4k, "Uring4k")
	p["block_size"], p["uuid"] = 4096, id
	d.Call(t, "bdev_uring_create", p)
	if b, raw := d.getBdev(t, "Uring4k"); b.BlockSize != 4096 || b.NumBlocks != 1024 || b.UUID != id {
		t.Fatalf("uring bdev with block_size 4096 and a uuid: %s", raw)
	}
	for _, bs := range []int{1000, 256} {
		p := uringParams(f4k, "Uring2")
		p["block_size"] = bs
		if je := d.CallErr(t, "bdev_uring_create", p); je.Code != -22 || !strings.Contains(je.Data, fmt.Sprint(bs)) {
			t.Fatalf("bdev_uring_create with block_size %d: %+v, want -22 naming it", bs, je)
		}
	}
	bad := uringParams(f, "Uring2")
	bad["readonly"] = true // the aio bdev's, not uring's
	d.expectError(t, "bdev_uring_create", bad, -32603, "spdk_json_decode_object failed")
	d.expectError(t, "bdev_uring_create", map[string]any{"name": "Uring2"}, -32603, "spdk_json_decode_object failed")
	uri := ""
	d.CallInto(t, "nbd_start_disk", map[string]any{"bdev_name": "Uring0"}, &uri)
	qemuIO(t, uri, "write -P 0x5a 4096 64k", "read -P 0x5a 4096 64k", "read -P 0 0 4096")
	d.Call(t, "nbd_stop_disk", map[string]any{"nbd_device": uri})
	d.expectError(t, "bdev_aio_delete", map[string]any{"name": "Uring0"}, -19, "No such device")
	expectJSON(t, "bdev_uring_delete", d.Call(t, "bdev_uring_delete", map[string]any{"name": "Uring0"}), "true")
	d.Call(t, "bdev_uring_delete", map[string]any{"name": "Uring4k"})
	if n := uringFds(t, d); n != rings {
		t.Fatalf("the daemon has %d io_uring instances after deleting its uring bdevs, want %d", n, rings)
	}
	d.expectError(t, "bdev_uring_delete", map[string]any{"name": "Uring0"}, -19, "No such device")
	// The file is free again, and kept what was written.
	d.Call(t, "bdev_uring_create", uringParams(f, "Uring0"))
	d.CallInto(t, "nbd_start_disk", map[string]any{"bdev_name": "Uring0"}, &uri)
	qemuIO(t, uri, "read -P 0x5a 4096 64k")
	d.Call(t, "nbd_stop_disk", map[string]any{"nbd_device": uri})
	d.Call(t, "bdev_uring_delete", map[string]any{"name": "Uring0"})
}

// uringFds counts the daemon's io_uring instances: its file descriptors
// on anon_inode:[io_uring].
func uringFds(t *testing.T, d *Daemon) int {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/fd", d.cmd.Process.Pid)
	fds, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, fd := range fds {
		if target, err := os.Readlink(filepath.Join(dir, fd.Name())); err == nil && target == "anon_inode:[io_uring]" {
			n++
		}
	}
	return n
}

// TestUringSaveLoadConfig: a write-back volume on two uring bdevs is
// written, saved with save_config and the daemon stopped; a fresh daemon
// given the saved config with load_config has the same bdevs (product,
// UUIDs, sizes), loads the cache and serves the data, and saves the same
// config.
func TestUringSaveLoadConfig(t *testing.T) {
	t.Parallel()
	files := sparseFiles(t, map[string]int64{"cache.bin": 16 << 20, "core.bin": 32 << 20})
	a := StartDaemon(t, DaemonOpts{Bare: true})
	a.Call(t, "bdev_uring_create", uringParams(filepath.Join(files, "cache.bin"), "UCache"))
	a.Call(t, "bdev_uring_create", uringParams(filepath.Join(files, "core.bin"), "UCore"))
	a.Call(t, "bdev_ocf_create", ocfParams("UVol", "wb", "UCache", "UCore", 0))
	a.Call(t, "nbd_start_disk", map[string]any{"bdev_name": "UVol"})
	qemuIO(t, a.URI("UVol"), "write -P 0x3c 0 1m", "write -P 0xc3 8m 256k")
	saved, err := a.Client(t).SaveConfig()
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(saved), `"bdev_uring_create"`); n != 2 {
		t.Fatalf("save_config has %d bdev_uring_create entries, want 2:\n%s", n, saved)
	}
	want := comparableBdevs(t, a)
	a.Stop(t) // it holds the files until it exits

	b := StartDaemon(t, DaemonOpts{Bare: true})
	if skipped, err := b.Client(t).LoadConfig(saved); err != nil || len(skipped) != 0 {
		t.Fatalf("load_config: skipped %v, err %v", skipped, err)
	}
	if got := comparableBdevs(t, b); got != want {
		t.Fatalf("bdevs after load_config differ:\n got %s\nwant %s", got, want)
	}
	if !strings.Contains(b.Stderr(), "cache loaded") {
		t.Fatalf("the volume did not load its cache:\n%s", b.Stderr())
	}
	qemuIO(t, b.URI("UVol"), "read -P 0x3c 0 1m", "read -P 0xc3 8m 256k", "read -P 0 1m 64k")
	resaved, err := b.Client(t).SaveConfig()
	if err != nil {
		t.Fatal(err)
	}
	norm := func(cfg []byte, d *Daemon) string { return strings.ReplaceAll(string(cfg), d.NBDAddr, "ADDR") }
	if norm(resaved, b) != norm(saved, a) {
		t.Fatalf("save_config after load_config differs:\nbefore:\n%s\nafter:\n%s", saved, resaved)
	}
	b.Stop(t)
}

// TestAbuseThreadsOnASlowUringFile is TestAbuseThreadsOnASlowFile on a
// uring bdev: 20 NBD clients with 64 reads each in flight on a file whose
// disk is slow (the daemon's reads throttled to 500 per second). The
// ring keeps 128 reads in the kernel without a thread each and parks the
// rest as goroutines, so the daemon's threads stay far below the aio
// bdev's bound of one per IO in the kernel.
func TestAbuseThreadsOnASlowUringFile(t *testing.T) {
	threads := slowFileReadStorm(t, "slow-uring-reads", 64<<20, func(path string) (string, map[string]any) {
		return "bdev_uring_create", uringParams(path, "Cold")
	})
	if bound := int64(24); threads > bound {
		t.Errorf("the daemon peaked at %d threads under 20 x 64 reads on a uring bdev; want at most %d", threads, bound)
	}
}
