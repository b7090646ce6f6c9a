package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestRemoteCoreStartRetry: the daemon starts on a persisted config whose
// NBD server (qemu-nbd on an image file) is down. It starts anyway: the
// NBD client bdev does not exist yet, the OCF vbdev on it waits, and the
// entry stays in framework_get_config and config.json while the daemon
// retries in the background, logging one warning. Once the server is up
// the bdev connects within a few seconds, the volume starts by itself
// and serves the image's data, and one info line says so.
func TestRemoteCoreStartRetry(t *testing.T) {
	image := writeFile(t, t.TempDir(), "core.img", bytes.Repeat([]byte{0x5a}, 16<<20))
	srv := qemuNBDUnix(t, image)
	srv.kill()
	dataDir := filepath.Join(t.TempDir(), "data")
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	writeFile(t, dataDir, "config.json", fmt.Appendf(nil, `{"subsystems":[{"subsystem":"bdev","config":[
 {"method":"bdev_nbd_client_create","params":{"name":"Remote0","uri":%q,"reconnect_delay_sec":1}},
 {"method":"bdev_malloc_create","params":{"name":"Cache0","num_blocks":16384,"block_size":512}},
 {"method":"bdev_ocf_create","params":{"name":"Vol0","mode":"wt","cache_bdev_name":"Cache0","core_bdev_name":"Remote0"}}]}]}`, srv.uri))
	d := StartDaemon(t, DaemonOpts{DataDir: dataDir})

	if _, ok := d.nbdClient(t, "Remote0"); ok {
		t.Fatal("Remote0 exists with its server down")
	}
	started := func() bool {
		var vb []struct {
			Started bool `json:"started"`
		}
		d.CallInto(t, "bdev_ocf_get_bdevs", map[string]any{"name": "Vol0"}, &vb)
		return len(vb) == 1 && vb[0].Started
	}
	if started() {
		t.Fatal("Vol0 started without its core")
	}
	var cfg []struct {
		Method string          `json:"method"`
		Params json.RawMessage `json:"params"`
	}
	d.CallInto(t, "framework_get_config", map[string]any{"name": "bdev"}, &cfg)
	if n := strings.Count(mustJSON(cfg), `"bdev_nbd_client_create"`); n != 1 {
		t.Fatalf("framework_get_config lists %d bdev_nbd_client_create entries while retrying, want 1: %s", n, mustJSON(cfg))
	}
	saved, err := os.ReadFile(filepath.Join(dataDir, "config.json"))
	if err != nil || !strings.Contains(string(saved), "Remote0") {
		t.Fatalf("config.json lost the NBD client entry (%v):\n%s", err, saved)
	}
	time.Sleep(2500 * time.Millisecond) // two more failed attempts
	if n := strings.Count(d.Stderr(), "cannot be reached at start"); n != 1 {
		t.Fatalf("%d retry warnings logged, want 1:\n%s", n, d.Stderr())
	}

	srv.start()
	waitFor(t, 5*time.Second, "Vol0 starts once its server is up", started)
	st, ok := d.nbdClient(t, "Remote0")
	if !ok || st.State != "connected" {
		t.Fatalf("Remote0 is %+v (listed %v), want connected", st, ok)
	}
	if n := strings.Count(d.Stderr(), "NBD client: connected; the bdev is created"); n != 1 {
		t.Fatalf("%d connected lines logged, want 1:\n%s", n, d.Stderr())
	}
	var uri string
	d.CallInto(t, "nbd_start_disk", map[string]any{"bdev_name": "Vol0"}, &uri)
	qemuIO(t, uri, "read -P 0x5a 0 1M", "write -P 0x33 64k 64k", "read -P 0x33 64k 64k")
	d.Stop(t)
	got, err := os.ReadFile(image)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got[64<<10:128<<10], bytes.Repeat([]byte{0x33}, 64<<10)) {
		t.Fatal("the write through the wt volume did not reach the server's image")
	}
}
