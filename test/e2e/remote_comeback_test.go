package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
	"time"

	"blockcache/internal/testutil"
)

// remoteWrites writes, through uri with one nbdsh, n random writes of 4 to
// 64 KiB inside [0, size), write i filling its range with byte first+i, and
// applies them to model once nbdsh has had them all acknowledged.
func remoteWrites(t *testing.T, uri string, rng *rand.Rand, n, first int, model []byte) {
	t.Helper()
	var ops [][2]int
	for range n {
		length := (1 + rng.IntN(16)) * 4096
		ops = append(ops, [2]int{rng.IntN((len(model)-length)/4096) * 4096, length})
	}
	b, _ := json.Marshal(ops)
	script := fmt.Sprintf("import json\nfor i, (off, n) in enumerate(json.loads(%q)):\n    h.pwrite(bytes([(%d + i) %% 256]) * n, off)\n", b, first)
	testutil.Run(t, testutil.NbdshEnv(t), "nbdsh", "-u", uri, "-c", script)
	for i, op := range ops {
		copy(model[op[0]:op[0]+op[1]], bytes.Repeat([]byte{byte(first + i)}, op[1]))
	}
}

// TestRemoteCoreComeback: a wb volume on an NBD client core (qemu-nbd on
// an image file) has acknowledged writes in its cache when the server is
// killed; after ctrlr_loss_timeout_sec the core bdev is removed and the
// volume waits for it, listed and kept in save_config, its cache still
// claimed, and its export pending. Once the server is back,
// bdev_nbd_client_create alone brings the volume back under its name with
// its dirty data, and its export with it, at the same URI: the data reads
// back and, flushed, reaches the image file, which then equals the model.
func TestRemoteCoreComeback(t *testing.T) {
	t.Parallel()
	const size = 16 << 20
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 15))
	image := writeFile(t, t.TempDir(), "core.img", make([]byte, size))
	srv := qemuNBDUnix(t, image)
	d := StartDaemon(t, DaemonOpts{Bare: true})
	create := map[string]any{"name": "Remote0", "uri": srv.uri, "ctrlr_loss_timeout_sec": 2, "reconnect_delay_sec": 1}
	d.Call(t, "bdev_nbd_client_create", create)
	uri := d.cacheOver(t, "Vol0", "wb", "Cache0", 32, "Remote0")

	model := make([]byte, size)
	remoteWrites(t, uri, rng, 60, 1, model)
	if st := d.stats(t, "Vol0"); st.Usage.Dirty.Count == 0 {
		t.Fatalf("no dirty data in wb after the writes: %+v", st.Usage)
	}

	srv.kill()
	waitFor(t, 20*time.Second, "Remote0 removed after ctrlr_loss_timeout_sec", func() bool {
		_, ok := d.nbdClient(t, "Remote0")
		return !ok
	})
	d.expectError(t, "bdev_get_bdevs", map[string]any{"name": "Vol0"}, -19, "No such device")
	var states []ocfState
	d.CallInto(t, "bdev_ocf_get_bdevs", map[string]any{"name": "Vol0"}, &states)
	if len(states) != 1 || states[0].Started || states[0].Failed || states[0].Core.Attached || !states[0].Cache.Attached {
		t.Fatalf("Vol0 while its core is gone: %+v, want waiting for its core on its attached cache", states)
	}
	d.expectClaimed(t, "Cache0", true)
	if cfg := d.configEntries(t, "bdev"); !strings.Contains(rawStrings(cfg), `"name":"Vol0"`) {
		t.Fatalf("save_config lost the waiting Vol0:\n%s", rawStrings(cfg))
	}
	// The export is pending: not listed (as SPDK), but kept.
	expectJSON(t, "nbd_get_disks while the volume waits", d.Call(t, "nbd_get_disks", nil), "[]")
	if raw := d.Call(t, "nbd_get_disks", map[string]any{"include_pending": true}); !strings.Contains(string(raw), `"state":"pending","pending":"its bdev was removed"`) {
		t.Fatalf("nbd_get_disks include_pending while the volume waits: %s", raw)
	}
	if onDisk, err := os.ReadFile(image); err != nil || bytes.Equal(onDisk, model) {
		t.Fatalf("the image file already holds the wb writes (err %v): the test proves nothing", err)
	}
	if je := d.CallErr(t, "bdev_ocf_get_stats", map[string]any{"name": "Vol0"}); !strings.Contains(je.Message+je.Data, `core bdev "Remote0" was removed`) {
		t.Fatalf("bdev_ocf_get_stats of the waiting Vol0: %+v, want the reason", je)
	}

	srv.start()
	d.Call(t, "bdev_nbd_client_create", create)
	waitFor(t, 10*time.Second, "Vol0 started again once its core bdev is back", func() bool {
		_, err := d.Client(t).Call("bdev_get_bdevs", map[string]any{"name": "Vol0"})
		return err == nil
	})
	if st := d.stats(t, "Vol0"); st.Usage.Dirty.Count == 0 {
		t.Fatalf("no dirty data once the core is back: %+v", st.Usage)
	}
	nbdinfoWorks(t, uri)
	if !strings.Contains(d.Stderr(), "nbd export started: its bdev registered") {
		t.Fatalf("the log does not say the export came back:\n%s", d.Stderr())
	}
	if got := readExport(t, uri); !bytes.Equal(got, model) {
		t.Fatalf("Vol0 once its core is back differs from the model at byte %d", testutil.FirstDiff(got, model))
	}
	remoteWrites(t, uri, rng, 20, 101, model)

	d.Call(t, "bdev_ocf_flush_start", map[string]any{"name": "Vol0"})
	waitFor(t, 30*time.Second, "flush of Vol0", func() bool { return !d.flushStatus(t, "Vol0").InProgress })
	if st := d.flushStatus(t, "Vol0"); st.Status == nil || *st.Status != 0 {
		t.Fatalf("flush status %+v", st)
	}
	onDisk, err := os.ReadFile(image)
	if err != nil {
		t.Fatal(err)
	}
	if i := testutil.FirstDiff(onDisk, model); i >= 0 {
		t.Fatalf("the image file after the flush differs from the model at byte %d", i)
	}
	if !strings.Contains(d.Stderr(), "core bdev back") {
		t.Fatalf("the log does not say Vol0 came back:\n%s", d.Stderr())
	}
	d.Call(t, "bdev_ocf_delete", map[string]any{"name": "Vol0"})
	d.Stop(t)
}

func rawStrings(raw []json.RawMessage) string {
	var b strings.Builder
	for _, r := range raw {
		b.Write(r)
		b.WriteByte('\n')
	}
	return b.String()
}
