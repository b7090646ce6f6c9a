package e2e

// Restarting the daemon on the same data directory, and what a second
// daemon on the same socket does.

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

	"golang.org/x/sys/unix"

	"blockcache/internal/nbd/nbdclient"
	"blockcache/internal/testutil"
)

// qemuIO runs qemu-io commands on uri and fails on a pattern mismatch or a
// command that did not complete.
func qemuIO(t *testing.T, uri string, cmds ...string) {
	t.Helper()
	args := []string{"-f", "raw"}
	for _, c := range cmds {
		args = append(args, "-c", c)
	}
	out := testutil.Run(t, nil, "qemu-io", append(args, uri)...)
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
	testutil.RequireTool(t, "qemu-io")
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
	testutil.RequireTool(t, "qemu-img")
	dataDir := filepath.Join(t.TempDir(), "data")
	files := sparseFiles(t, map[string]int64{"cache.bin": 8 << 20, "core.bin": 32 << 20})
	cacheFile, coreFile := filepath.Join(files, "cache.bin"), filepath.Join(files, "core.bin")
	d := StartDaemon(t, DaemonOpts{DataDir: dataDir})
	d.Call(t, "bdev_aio_create", aioParams(cacheFile, "WbCache"))
	d.Call(t, "bdev_aio_create", aioParams(coreFile, "WbCore"))
	d.Call(t, "bdev_ocf_create", ocfParams("WbVol", "wb", "WbCache", "WbCore", 8))
	var uri string
	d.CallInto(t, "nbd_start_disk", map[string]any{"bdev_name": "WbVol"}, &uri)

	data := randomBytes(3, imageSize)
	img := writeFile(t, t.TempDir(), "image.raw", data)
	testutil.Run(t, nil, "qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", img, uri)
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
	expectSameImage(t, "after restart", img, d2.URI("WbVol"))
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

// sparseFiles creates empty files of the given sizes in a new directory.
func sparseFiles(t *testing.T, sizes map[string]int64) string {
	t.Helper()
	dir := t.TempDir()
	for name, size := range sizes {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(p, size); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// wbOnFiles creates aio bdevs on cache.bin and core.bin in dir, a
// write-back vbdev Vol on them and its export; it returns the export URI.
func (d *Daemon) wbOnFiles(t *testing.T, dir string) string {
	t.Helper()
	d.Call(t, "bdev_aio_create", aioParams(filepath.Join(dir, "cache.bin"), "VCache"))
	d.Call(t, "bdev_aio_create", aioParams(filepath.Join(dir, "core.bin"), "VCore"))
	d.Call(t, "bdev_ocf_create", ocfParams("Vol", "wb", "VCache", "VCore", 0))
	var uri string
	d.CallInto(t, "nbd_start_disk", map[string]any{"bdev_name": "Vol"}, &uri)
	return uri
}

// TestRestartKeepsDirtyData stops a daemon with --shutdown-flush=false, so
// the dirty data stays in the cache, and checks that the next start loads
// the cache and serves it, with the volume's UUID unchanged.
func TestRestartKeepsDirtyData(t *testing.T) {
	t.Parallel()
	testutil.RequireTool(t, "qemu-img")
	dataDir := filepath.Join(t.TempDir(), "data")
	files := sparseFiles(t, map[string]int64{"cache.bin": 8 << 20, "core.bin": 32 << 20})
	d := StartDaemon(t, DaemonOpts{DataDir: dataDir, Args: []string{"--shutdown-flush=false"}})
	uri := d.wbOnFiles(t, files)
	data := randomBytes(6, imageSize)
	img := writeFile(t, t.TempDir(), "image.raw", data)
	testutil.Run(t, nil, "qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", img, uri)
	dirty := d.stats(t, "Vol").Usage.Dirty.Count
	if dirty == 0 {
		t.Fatal("no dirty data before shutdown")
	}
	before, _ := d.getBdev(t, "Vol")
	d.Stop(t)

	core, err := os.ReadFile(filepath.Join(files, "core.bin"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(core[:imageSize], data) {
		t.Fatalf("with --shutdown-flush=false the core already holds everything (%d dirty 4 KiB blocks before shutdown)", dirty)
	}

	d2 := StartDaemon(t, DaemonOpts{DataDir: dataDir})
	if !strings.Contains(d2.Stderr(), "cache loaded") {
		t.Fatalf("the restart did not load the cache:\n%s", d2.Stderr())
	}
	after, _ := d2.getBdev(t, "Vol")
	if after.UUID != before.UUID {
		t.Fatalf("volume UUID %s after restart, was %s", after.UUID, before.UUID)
	}
	if got := d2.stats(t, "Vol").Usage.Dirty.Count; got != dirty {
		t.Errorf("%d dirty 4 KiB blocks after loading, %d before shutdown", got, dirty)
	}
	expectSameImage(t, "after loading the dirty cache", img, d2.URI("Vol"))
	// This time the shutdown writes back: the core file alone is complete.
	d2.Stop(t)
	core, err = os.ReadFile(filepath.Join(files, "core.bin"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(core[:imageSize], data) {
		t.Fatalf("core after a flushing shutdown: %d bytes differ", countDiff(core[:imageSize], data))
	}
}

// TestRestartAfterKill kills a daemon with SIGKILL after a client wrote
// and flushed, and checks that a restart serves the flushed data.
func TestRestartAfterKill(t *testing.T) {
	t.Parallel()
	testutil.RequireTool(t, "qemu-img")
	dataDir := filepath.Join(t.TempDir(), "data")
	files := sparseFiles(t, map[string]int64{"cache.bin": 8 << 20, "core.bin": 32 << 20})
	d := StartDaemon(t, DaemonOpts{DataDir: dataDir})
	uri := d.wbOnFiles(t, files)
	img := writeFile(t, t.TempDir(), "image.raw", randomBytes(7, imageSize))
	// qemu-img flushes the target before it exits.
	testutil.Run(t, nil, "qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", img, uri)
	if d.stats(t, "Vol").Usage.Dirty.Count == 0 {
		t.Fatal("no dirty data before the kill")
	}
	d.Kill(t)

	d2 := StartDaemon(t, DaemonOpts{DataDir: dataDir})
	expectSameImage(t, "after SIGKILL and restart", img, d2.URI("Vol"))
	d2.Stop(t)
}

// TestForeignCacheDevice reuses a cache file that holds another cache:
// bdev_ocf_create must refuse it for another core (and leave nothing of the
// new vbdev behind), and load it for the core it records.
func TestForeignCacheDevice(t *testing.T) {
	t.Parallel()
	files := sparseFiles(t, map[string]int64{"cache.bin": 8 << 20, "core.bin": 16 << 20, "other.bin": 16 << 20})
	d := StartDaemon(t, DaemonOpts{Bare: true})
	uri := d.wbOnFiles(t, files)
	qemuIO(t, uri, "write -P 0x61 0 256k")
	d.Stop(t)

	d2 := StartDaemon(t, DaemonOpts{Bare: true})
	d2.Call(t, "bdev_aio_create", aioParams(filepath.Join(files, "cache.bin"), "VCache"))
	d2.Call(t, "bdev_aio_create", aioParams(filepath.Join(files, "other.bin"), "Other"))
	je := d2.CallErr(t, "bdev_ocf_create", ocfParams("New", "wb", "VCache", "Other", 0))
	if je.Code != -32603 || !strings.HasPrefix(je.Message, "Could not create OCF vbdev: -") || !strings.Contains(je.Data, "holds") {
		t.Fatalf("bdev_ocf_create on a cache device holding another cache: %+v", je)
	}
	d2.expectError(t, "bdev_ocf_get_bdevs", map[string]any{"name": "New"}, -32602, "No such device")
	d2.expectClaimed(t, "Other", false)

	// The core the cache records: loaded, with its data. (Whether examine
	// already re-created Vol from the metadata or not, the create gets it.)
	d2.Call(t, "bdev_aio_create", aioParams(filepath.Join(files, "core.bin"), "VCore"))
	d2.Call(t, "bdev_ocf_create", ocfParams("Vol", "wb", "VCache", "VCore", 0))
	d2.Call(t, "nbd_start_disk", map[string]any{"bdev_name": "Vol"})
	qemuIO(t, d2.URI("Vol"), "read -P 0x61 0 256k")
	d2.Call(t, "bdev_ocf_delete", map[string]any{"name": "Vol"})

	// After bdev_ocf_delete the cache records no core: a new one may use it.
	d2.Call(t, "bdev_ocf_create", ocfParams("New", "wt", "VCache", "Other", 0))
	d2.Call(t, "bdev_ocf_delete", map[string]any{"name": "New"})
	d2.Stop(t)
}

// TestConfigFiles starts the daemon on hand-written configs: one that
// creates an OCF vbdev before its bases (it must start once they appear),
// and broken ones (the daemon must exit non-zero naming the problem).
func TestConfigFiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	early := writeFile(t, dir, "early.json", []byte(`{"subsystems":[
	  {"subsystem":"nbd","config":[{"method":"nbd_start_disk","params":{"bdev_name":"Early"}}]},
	  {"subsystem":"bdev","config":[
	    {"method":"bdev_ocf_create","params":{"name":"Early","mode":"wb","cache_bdev_name":"EC","core_bdev_name":"ED","cache_line_size":0}},
	    {"method":"bdev_malloc_create","params":{"name":"ED","num_blocks":32768,"block_size":512}},
	    {"method":"bdev_malloc_create","params":{"name":"EC","num_blocks":16384,"block_size":512}},
	    {"method":"bdev_wait_for_examine"}]},
	  {"subsystem":"scheduler","config":[]}]}`))
	d := StartDaemon(t, DaemonOpts{Bare: true, Config: early})
	d.waitStdout(t, "export Early: "+d.URI("Early"))
	if vb := d.ocfBdevs(t, "Early"); len(vb) != 1 || !vb[0].Started {
		t.Fatalf("a vbdev configured before its bases: %+v", vb)
	}
	qemuIO(t, d.URI("Early"), "write -P 0x10 0 64k", "read -P 0x10 0 64k")
	d.Stop(t)

	for _, c := range []struct {
		name, config, want string
	}{
		{"unknown-method", `{"subsystems":[{"subsystem":"bdev","config":[{"method":"bdev_malloc_create","params":{"name":"A","num_blocks":100,"block_size":512}},{"method":"bogus_method"}]}]}`,
			"entry 1 (bogus_method): Method not found"},
		{"bad-params", `{"subsystems":[{"subsystem":"bdev","config":[{"method":"bdev_malloc_create","params":{"name":"A"}}]}]}`,
			"entry 0 (bdev_malloc_create): spdk_json_decode_object failed"},
		{"truncated", `{"subsystems":`, "parse config"},
		{"missing", "", "read config"},
	} {
		path := filepath.Join(dir, c.name+".json")
		if c.config != "" {
			writeFile(t, dir, c.name+".json", []byte(c.config))
		}
		p := startProcess(t, DaemonOpts{Bare: true, Config: path})
		if code := p.Wait(t, 20*time.Second); code == 0 {
			t.Fatalf("%s: serve --config exited with status 0", c.name)
		}
		if !strings.Contains(p.Stderr(), c.want) {
			t.Fatalf("%s: stderr does not say %q:\n%s", c.name, c.want, p.Stderr())
		}
		if _, err := os.Stat(p.Sock); err == nil {
			t.Fatalf("%s: the RPC socket was left behind", c.name)
		}
	}
}

// TestExamineAutoLoad leaves dirty data in a cache file (a bare daemon
// stopped with --shutdown-flush=false) and creates the two file bdevs in a
// fresh bare daemon, in either order: the vbdev must come back on its own
// by loading the cache (lifecycle.md, "Examine and auto-load"), dirty data
// included.
func TestExamineAutoLoad(t *testing.T) {
	t.Parallel()
	testutil.RequireTool(t, "qemu-img")
	files := sparseFiles(t, map[string]int64{"cache.bin": 8 << 20, "core.bin": 32 << 20})
	d := StartDaemon(t, DaemonOpts{Bare: true, Args: []string{"--shutdown-flush=false"}})
	uri := d.wbOnFiles(t, files)
	img := writeFile(t, t.TempDir(), "image.raw", randomBytes(8, imageSize))
	testutil.Run(t, nil, "qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", img, uri)
	dirty := d.stats(t, "Vol").Usage.Dirty.Count
	before, _ := d.getBdev(t, "Vol")
	d.Stop(t)
	if dirty == 0 {
		t.Fatal("no dirty data before shutdown")
	}

	for _, order := range [][]string{{"VCache", "VCore"}, {"VCore", "VCache"}} {
		d := StartDaemon(t, DaemonOpts{Bare: true, Args: []string{"--shutdown-flush=false"}})
		for _, n := range order {
			d.Call(t, "bdev_aio_create", aioParams(filepath.Join(files, map[string]string{"VCache": "cache.bin", "VCore": "core.bin"}[n]), n))
		}
		vb := d.ocfBdevs(t, "")
		if len(vb) != 1 || vb[0].Name != "Vol" || !vb[0].Started {
			t.Fatalf("bases created in order %v: vbdevs %+v, want Vol started from the cache's metadata", order, vb)
		}
		after, _ := d.getBdev(t, "Vol")
		var ds ocfDriverSpecific
		json.Unmarshal(after.DriverSpecific, &ds)
		if after.UUID != before.UUID || ds.Mode != "wb" || ds.CacheDevice != "VCache" || ds.CoreDevice != "VCore" {
			t.Fatalf("re-created Vol: %+v %s, want uuid %s and mode wb", after, after.DriverSpecific, before.UUID)
		}
		if got := d.stats(t, "Vol").Usage.Dirty.Count; got != dirty {
			t.Errorf("order %v: %d dirty blocks after loading, %d before", order, got, dirty)
		}
		var u string
		d.CallInto(t, "nbd_start_disk", map[string]any{"bdev_name": "Vol"}, &u)
		expectSameImage(t, fmt.Sprintf("order %v", order), img, u)
		// The vbdev is in the config as if it had been created by RPC.
		if !strings.Contains(string(d.configEntry(t, "bdev_ocf_create", "name", "Vol")), `"core_bdev_name":"VCore"`) {
			t.Fatal("the re-created vbdev is not in framework_get_config")
		}
		// compare's reads inserted lines, evicting (so cleaning) dirty
		// ones: what the next load must find is what is dirty now.
		dirty = d.stats(t, "Vol").Usage.Dirty.Count
		d.Stop(t)
	}
}

// TestRestartKeepsWaitingVbdev creates, in a daemon that persists its
// state, a vbdev whose cache bdev does not exist yet, restarts, and then
// creates the cache: the vbdev must still be there, waiting, and start.
func TestRestartKeepsWaitingVbdev(t *testing.T) {
	t.Parallel()
	dataDir := filepath.Join(t.TempDir(), "data")
	files := sparseFiles(t, map[string]int64{"cache.bin": 8 << 20, "core.bin": 16 << 20})
	d := StartDaemon(t, DaemonOpts{DataDir: dataDir})
	d.Call(t, "bdev_aio_create", aioParams(filepath.Join(files, "core.bin"), "WCore"))
	d.Call(t, "bdev_ocf_create", ocfParams("Waiting", "wb", "WCache", "WCore", 16))
	d.Stop(t)

	d2 := StartDaemon(t, DaemonOpts{DataDir: dataDir})
	vb := d2.ocfBdevs(t, "")
	if len(vb) != 2 || vb[1].Name != "Waiting" || vb[1].Started || !vb[1].Core.Attached {
		t.Fatalf("after a restart, vbdevs %+v, want cache0 and Waiting (not started, core attached)", vb)
	}
	d2.Call(t, "bdev_aio_create", aioParams(filepath.Join(files, "cache.bin"), "WCache"))
	b, _ := d2.getBdev(t, "Waiting")
	var ds ocfDriverSpecific
	json.Unmarshal(b.DriverSpecific, &ds)
	if ds.Mode != "wb" || ds.CacheLineSize != 16 {
		t.Fatalf("Waiting once started: %s, want mode wb and 16 KiB lines", b.DriverSpecific)
	}
	d2.Stop(t)
}

// TestConcurrentManagement runs management RPCs from several clients at
// once in a daemon that persists every change, with IO on a volume, and
// checks that the persisted state is the final one and loads again.
func TestConcurrentManagement(t *testing.T) {
	t.Parallel()
	dataDir := filepath.Join(t.TempDir(), "data")
	d := StartDaemon(t, DaemonOpts{DataDir: dataDir})
	d.waitStdout(t, "export cache0: ")
	const workers, rounds = 6, 8
	errc := make(chan error, workers+1)
	stopIO := make(chan struct{})
	ioDone := make(chan error, 1)
	go func() {
		c, err := nbdclient.Dial("tcp", d.NBDAddr, nbdclient.Options{Export: "cache0", StructuredReplies: true})
		if err != nil {
			ioDone <- err
			return
		}
		defer c.Close()
		buf := make([]byte, 65536)
		for i := uint64(0); ; i++ {
			select {
			case <-stopIO:
				ioDone <- nil
				return
			default:
			}
			if err := c.WriteAt(buf, (i%512)*65536, 0); err != nil {
				ioDone <- err
				return
			}
		}
	}()
	for w := range workers {
		go func() {
			c, err := d.dial()
			if err != nil {
				errc <- err
				return
			}
			defer c.Close()
			call := func(method string, params any) error {
				if _, err := c.Call(method, params); err != nil {
					return fmt.Errorf("worker %d: %s %s: %w", w, method, mustJSON(params), err)
				}
				return nil
			}
			for r := range rounds {
				p := fmt.Sprintf("W%dR%d", w, r)
				steps := []struct {
					m string
					p any
				}{
					{"bdev_malloc_create", mallocParams(p+"c", 4, 512)},
					{"bdev_malloc_create", mallocParams(p+"d", 8, 512)},
					{"bdev_ocf_create", ocfParams(p, []string{"wt", "wb", "wa", "wi", "pt", "wo"}[r%6], p+"c", p+"d", 0)},
					{"nbd_start_disk", map[string]any{"bdev_name": p}},
					{"bdev_ocf_get_stats", map[string]any{"name": p}},
					{"bdev_get_bdevs", nil},
					{"framework_get_config", map[string]any{"name": "bdev"}},
				}
				if r%2 == 0 { // leave the odd rounds' volumes in place
					steps = append(steps, []struct {
						m string
						p any
					}{
						{"nbd_stop_disk", map[string]any{"nbd_device": d.URI(p)}},
						{"bdev_ocf_delete", map[string]any{"name": p}},
						{"bdev_malloc_delete", map[string]any{"name": p + "c"}},
						{"bdev_malloc_delete", map[string]any{"name": p + "d"}},
					}...)
				}
				for _, s := range steps {
					if err := call(s.m, s.p); err != nil {
						errc <- err
						return
					}
				}
			}
			errc <- nil
		}()
	}
	for range workers {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	close(stopIO)
	if err := <-ioDone; err != nil {
		t.Fatalf("IO on cache0 during the management storm: %v", err)
	}
	want := d.bdevNames(t)
	if len(want) != 3+workers*rounds/2*3 {
		t.Fatalf("%d bdevs after the storm, want %d: %v", len(want), 3+workers*rounds/2*3, want)
	}
	var disks []nbdDisk
	d.CallInto(t, "nbd_get_disks", nil, &disks)
	d.Stop(t)

	d2 := StartDaemon(t, DaemonOpts{DataDir: dataDir})
	got := d2.bdevNames(t)
	slices.Sort(want)
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Fatalf("bdevs after restart differ:\n got %v\nwant %v", got, want)
	}
	var disks2 []nbdDisk
	d2.CallInto(t, "nbd_get_disks", nil, &disks2)
	if len(disks2) != len(disks) {
		t.Fatalf("%d exports after restart, %d before", len(disks2), len(disks))
	}
	d2.Stop(t)
}

// TestLegacyINI starts the daemon on a legacy SPDK INI config (SPDK's OCF
// vbdev's [OCF] section over [Malloc] and [AIO] bases) with --ini.
func TestLegacyINI(t *testing.T) {
	t.Parallel()
	files := sparseFiles(t, map[string]int64{"core.bin": 16 << 20})
	dir := t.TempDir()
	ini := writeFile(t, dir, "old.ini", []byte(`# an SPDK v20.10 config
[Global]
  ReactorMask 0x1
[Malloc]
  NumberOfLuns 2
  LunSizeInMB 8
[AIO]
  AIO `+filepath.Join(files, "core.bin")+` AIO0
[OCF]
  OCF Legacy wb 8 Malloc0 AIO0
`))
	d := StartDaemon(t, DaemonOpts{Bare: true, Args: []string{"--ini", ini}})
	if names := d.bdevNames(t); !slices.Equal(names, []string{"Malloc0", "Malloc1", "AIO0", "Legacy"}) {
		t.Fatalf("bdevs from the INI config: %v", names)
	}
	b, _ := d.getBdev(t, "Legacy")
	expectPrefixJSON(t, "Legacy driver_specific", b.DriverSpecific,
		`{"cache_device":"Malloc0","core_device":"AIO0","mode":"wb","cache_line_size":8,"metadata_volatile":false}`)
	var uri string
	d.CallInto(t, "nbd_start_disk", map[string]any{"bdev_name": "Legacy"}, &uri)
	qemuIO(t, uri, "write -P 0x0d 0 64k", "read -P 0x0d 0 64k")
	d.Stop(t)

	bad := writeFile(t, dir, "bad.ini", []byte("[OCF]\n  OCF Broken wb\n"))
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--ini", bad}, "bad.ini:2:"},
		{[]string{"--ini", ini, "--config", ini}, "--config and --ini exclude each other"},
	} {
		p := startProcess(t, DaemonOpts{Bare: true, Args: c.args})
		if code := p.Wait(t, 20*time.Second); code == 0 || !strings.Contains(p.Stderr(), c.want) {
			t.Fatalf("serve %v: status %d, want non-zero and %q in:\n%s", c.args, code, c.want, p.Stderr())
		}
	}
}

// TestCPUMask starts the daemon with SPDK's -m: every thread of it must be
// allowed only the CPU of the mask, and it must still serve. A mask naming
// a CPU the process cannot use fails the start with a message naming it.
func TestCPUMask(t *testing.T) {
	t.Parallel()
	d := StartDaemon(t, DaemonOpts{Bare: true, Args: []string{"-m", "0x1"}})
	d.Call(t, "bdev_malloc_create", mallocParams("M0", 8, 512))
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", d.cmd.Process.Pid))
	if err != nil || len(tasks) == 0 {
		t.Fatalf("threads of the daemon: %v %v", tasks, err)
	}
	for _, status := range tasks {
		b, err := os.ReadFile(status)
		if err != nil {
			continue // the thread exited
		}
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "Cpus_allowed_list:"); ok && strings.TrimSpace(v) != "0" {
				t.Errorf("%s: Cpus_allowed_list %s, want 0", status, strings.TrimSpace(v))
			}
		}
	}
	if !strings.Contains(d.Stderr(), "msg=pinned cpus=0 gomaxprocs=1") {
		t.Errorf("no log line of the pinning:\n%s", d.Stderr())
	}
	d.Stop(t)

	// One CPU past the highest this process may use.
	var allowed unix.CPUSet
	if err := unix.SchedGetaffinity(0, &allowed); err != nil {
		t.Fatal(err)
	}
	beyond := 0
	for c := range len(allowed) * 64 {
		if allowed.IsSet(c) {
			beyond = c + 1
		}
	}
	mask := fmt.Sprintf("[%d]", beyond)
	bad := startProcess(t, DaemonOpts{Bare: true, Args: []string{"-m", mask}})
	if code := bad.Wait(t, 20*time.Second); code == 0 {
		t.Fatalf("a daemon pinned to CPU %d, which it may not use, exited with status 0", beyond)
	}
	if msg := bad.Stderr(); !strings.Contains(msg, fmt.Sprintf("-m/--cpumask %s: CPU %d is not available", mask, beyond)) {
		t.Errorf("message does not name the CPU:\n%s", msg)
	}
}
