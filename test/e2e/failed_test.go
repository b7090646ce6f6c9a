package e2e

// One damaged cache never takes the daemon down: the volume is kept in the
// failed state with its reason, every other volume starts and serves, and
// the RPC socket answers so that the operator can repair it.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"blockcache/internal/testutil"
)

// ocfState is an element of bdev_ocf_get_bdevs with blockcache's failed
// state.
type ocfState struct {
	Name    string `json:"name"`
	Started bool   `json:"started"`
	Failed  bool   `json:"failed"`
	Error   string `json:"error"`
	Cache   struct {
		Attached bool `json:"attached"`
	} `json:"cache"`
	Core struct {
		Attached bool `json:"attached"`
	} `json:"core"`
}

func (d *Daemon) ocfStates(t *testing.T) map[string]ocfState {
	t.Helper()
	var list []ocfState
	d.CallInto(t, "bdev_ocf_get_bdevs", nil, &list)
	out := map[string]ocfState{}
	for _, v := range list {
		out[v.Name] = v
	}
	return out
}

// cliOut runs a blockcache client command against d and returns its
// output, failing the test if it exits non-zero.
func (d *Daemon) cliOut(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command(binPath, append(args, "-s", d.Sock)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("blockcache %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// twoVolumes is a data directory whose config holds two write-back
// volumes, V1 (cache c1.bin, core d1.bin) and V2 (c2.bin, d2.bin), both
// exported, each holding 1 MiB of dirty data (0x61 on V1, 0x62 on V2): the
// last daemon stopped without writing it back.
type twoVolumes struct {
	files, dataDir string
}

func newTwoVolumes(t *testing.T) twoVolumes {
	t.Helper()
	tv := twoVolumes{
		files:   sparseFiles(t, map[string]int64{"c1.bin": 8 << 20, "d1.bin": 32 << 20, "c2.bin": 8 << 20, "d2.bin": 32 << 20}),
		dataDir: filepath.Join(t.TempDir(), "data"),
	}
	f := func(name string) string { return filepath.Join(tv.files, name) }
	cfg := fmt.Sprintf(`{"subsystems":[
	  {"subsystem":"bdev","config":[
	    {"method":"bdev_aio_create","params":{"name":"C1","filename":%q}},
	    {"method":"bdev_aio_create","params":{"name":"D1","filename":%q}},
	    {"method":"bdev_aio_create","params":{"name":"C2","filename":%q}},
	    {"method":"bdev_aio_create","params":{"name":"D2","filename":%q}},
	    {"method":"bdev_ocf_create","params":{"name":"V1","mode":"wb","cache_bdev_name":"C1","core_bdev_name":"D1"}},
	    {"method":"bdev_ocf_create","params":{"name":"V2","mode":"wb","cache_bdev_name":"C2","core_bdev_name":"D2"}},
	    {"method":"bdev_wait_for_examine"}]},
	  {"subsystem":"nbd","config":[
	    {"method":"nbd_start_disk","params":{"bdev_name":"V1"}},
	    {"method":"nbd_start_disk","params":{"bdev_name":"V2"}}]}]}`, f("c1.bin"), f("d1.bin"), f("c2.bin"), f("d2.bin"))
	d := StartDaemon(t, DaemonOpts{DataDir: tv.dataDir, Config: writeFile(t, t.TempDir(), "two.json", []byte(cfg)),
		Args: []string{"--shutdown-flush=false"}})
	qemuIO(t, d.URI("V1"), "write -P 0x61 0 1M")
	qemuIO(t, d.URI("V2"), "write -P 0x62 0 1M")
	for _, v := range []string{"V1", "V2"} {
		if d.stats(t, v).Usage.Dirty.Count == 0 {
			t.Fatalf("%s: no dirty data before the stop", v)
		}
	}
	d.Stop(t)
	return tv
}

// restart starts a daemon on the data directory's persisted config.
func (tv twoVolumes) restart(t *testing.T) *Daemon {
	t.Helper()
	return StartDaemon(t, DaemonOpts{DataDir: tv.dataDir, Args: []string{"--shutdown-flush=false"}})
}

// Damage done to a cache image, at byte offsets of its layout
// (docs/durability.md): two 64 KiB superblock copies, then the entry
// sectors.
const (
	superblockArea = 128 << 10
	entrySector    = 512
)

// zeroSuperblocks zeroes both superblock copies of a cache image.
func zeroSuperblocks(t *testing.T, img string) {
	t.Helper()
	writeAt(t, img, make([]byte, superblockArea), 0)
}

// corruptEntrySector overwrites the first entry sector (the entries of
// lines 0..48) with garbage and returns what it held.
func corruptEntrySector(t *testing.T, img string) []byte {
	t.Helper()
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	old := bytes.Clone(b[superblockArea : superblockArea+entrySector])
	writeAt(t, img, randomBytes(11, entrySector), superblockArea)
	return old
}

func writeAt(t *testing.T, path string, p []byte, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(p, off); err != nil {
		t.Fatal(err)
	}
}

// persistedMethods returns "method name" for each entry of config.json.
func persistedMethods(t *testing.T, dataDir string) []string {
	t.Helper()
	var out []string
	for _, ss := range readConfig(t, filepath.Join(dataDir, "config.json")).Subsystems {
		for _, raw := range ss.Config {
			var m struct {
				Method string `json:"method"`
				Params struct {
					Name     string `json:"name"`
					BdevName string `json:"bdev_name"`
				} `json:"params"`
			}
			if err := json.Unmarshal(raw, &m); err != nil {
				t.Fatalf("config.json entry %s: %v", raw, err)
			}
			out = append(out, strings.TrimSpace(m.Method+" "+m.Params.Name+m.Params.BdevName))
		}
	}
	return out
}

// checkFailedStart checks a daemon that restarted with V1's cache damaged:
// V2 serves its data over NBD, V1 is failed with a reason containing
// reason (in bdev_ocf_get_bdevs, cache list and an ERROR log line), the
// export of V1 is pending naming V1 as the cause, and config.json keeps
// V1 and its export.
func checkFailedStart(t *testing.T, d *Daemon, dataDir, reason string) {
	t.Helper()
	qemuIO(t, d.URI("V2"), "read -P 0x62 0 1M")
	if out := testutil.Run(t, nil, "nbdinfo", "--size", d.URI("V2")); strings.TrimSpace(out) != fmt.Sprint(32<<20) {
		t.Errorf("nbdinfo --size V2: %q", out)
	}

	st := d.ocfStates(t)
	v1, v2 := st["V1"], st["V2"]
	if v1.Started || !v1.Failed || !strings.Contains(v1.Error, reason) || v1.Cache.Attached || v1.Core.Attached {
		t.Errorf("V1 in bdev_ocf_get_bdevs: %+v, want failed, nothing attached, error containing %q", v1, reason)
	}
	if !v2.Started || v2.Failed || v2.Error != "" {
		t.Errorf("V2 in bdev_ocf_get_bdevs: %+v, want started", v2)
	}

	list := d.cliOut(t, "cache", "list")
	var v1Row, v2Row string
	for _, line := range strings.Split(list, "\n") {
		switch f := strings.Fields(line); {
		case len(f) > 1 && f[0] == "V1":
			v1Row = line
		case len(f) > 1 && f[0] == "V2":
			v2Row = line
		}
	}
	if f := strings.Fields(v1Row); len(f) < 2 || f[1] != "failed" || !strings.Contains(v1Row, reason) {
		t.Errorf("cache list, V1's row is not failed with %q:\n%s", reason, list)
	}
	if f := strings.Fields(v2Row); len(f) < 2 || f[1] != "started" {
		t.Errorf("cache list, V2's row is not started:\n%s", list)
	}

	logs := d.Stderr()
	var failedLine, skippedLine bool
	for _, line := range strings.Split(logs, "\n") {
		failedLine = failedLine || strings.Contains(line, "level=ERROR") && strings.Contains(line, "OCF vbdev failed to start") &&
			strings.Contains(line, "vbdev=V1") && strings.Contains(line, reason)
		skippedLine = skippedLine || strings.Contains(line, "level=WARN") && strings.Contains(line, "nbd export pending") &&
			strings.Contains(line, `OCF vbdev \"V1\" failed to start`) && strings.Contains(line, reason)
	}
	if !failedLine || !skippedLine {
		t.Errorf("the log lacks the ERROR line of V1's failure (%v) or of its pending export naming it (%v):\n%s", failedLine, skippedLine, logs)
	}
	if strings.Contains(logs, "No such device") {
		t.Errorf("the log blames a missing device:\n%s", logs)
	}

	persisted := strings.Join(persistedMethods(t, dataDir), "\n")
	for _, e := range []string{"bdev_ocf_create V1", "nbd_start_disk V1", "bdev_ocf_create V2", "nbd_start_disk V2"} {
		if !strings.Contains(persisted+"\n", e+"\n") {
			t.Errorf("config.json lacks %q:\n%s", e, persisted)
		}
	}
	var version map[string]any
	d.CallInto(t, "spdk_get_version", nil, &version)
}

// TestDamagedCacheZeroedSuperblocks: V1's cache image loses both
// superblock copies; the restart keeps V1 failed, saying what is on the
// device and what to do, serves V2, and bdev_ocf_delete removes V1 and
// its export for good.
func TestDamagedCacheZeroedSuperblocks(t *testing.T) {
	t.Parallel()
	testutil.RequireTool(t, "qemu-io")
	testutil.RequireTool(t, "nbdinfo")
	tv := newTwoVolumes(t)
	zeroSuperblocks(t, filepath.Join(tv.files, "c1.bin"))

	d := tv.restart(t)
	checkFailedStart(t, d, tv.dataDir, "holds no readable superblock")
	if st := d.ocfStates(t); strings.Contains(st["V1"].Error, "holds another cache") {
		t.Errorf("a blank superblock pair is reported as another cache: %s", st["V1"].Error)
	}

	d.Call(t, "bdev_ocf_delete", map[string]any{"name": "V1"})
	d.expectError(t, "bdev_ocf_get_bdevs", map[string]any{"name": "V1"}, -32602, "No such device")
	d.expectClaimed(t, "C1", false)
	d.expectClaimed(t, "D1", false)
	for _, e := range persistedMethods(t, tv.dataDir) {
		if strings.HasSuffix(e, " V1") {
			t.Errorf("config.json still holds %q after bdev_ocf_delete V1", e)
		}
	}
	d.Stop(t)

	d2 := tv.restart(t)
	if strings.Contains(d2.Stderr(), "level=ERROR") {
		t.Errorf("the restart after deleting V1 logged errors:\n%s", d2.Stderr())
	}
	qemuIO(t, d2.URI("V2"), "read -P 0x62 0 1M")
	d2.Stop(t)
}

// TestDamagedCacheEntrySector: one entry sector of V1's cache image is
// garbage; the restart keeps V1 failed naming the sector, serves V2; a
// bdev_ocf_create retry fails the same way; once the sector is repaired
// and the cache bdev created again, V1 starts by loading the cache with its
// dirty data, its pending export with it, and the next restart starts both
// cleanly.
func TestDamagedCacheEntrySector(t *testing.T) {
	t.Parallel()
	testutil.RequireTool(t, "qemu-io")
	testutil.RequireTool(t, "nbdinfo")
	tv := newTwoVolumes(t)
	img := filepath.Join(tv.files, "c1.bin")
	good := corruptEntrySector(t, img)

	d := tv.restart(t)
	checkFailedStart(t, d, tv.dataDir, "entry sector 0 (byte offset 131072")
	// Its export is pending: the name is taken until V1 starts.
	d.expectError(t, "nbd_start_disk", map[string]any{"bdev_name": "V1"}, -16, "Device or resource busy")

	// A retry while the sector is still damaged fails the same way and
	// leaves V1 as it was.
	je := d.CallErr(t, "bdev_ocf_create", ocfParams("V1", "wb", "C1", "D1", 0))
	if !strings.HasPrefix(je.Message, "Could not create OCF vbdev: -") || !strings.Contains(je.Data, "entry sector 0") {
		t.Fatalf("retry on the damaged cache: %+v", je)
	}
	if st := d.ocfStates(t)["V1"]; !st.Failed {
		t.Fatalf("after a failed retry V1 is %+v, want still failed", st)
	}

	// The repair lifecycle.md describes: the failed volume holds no claim,
	// so its cache bdev can be deleted; the image is repaired; the cache
	// bdev created again retries the start, which loads the dirty data.
	d.expectClaimed(t, "C1", false)
	d.Call(t, "bdev_aio_delete", map[string]any{"name": "C1"})
	writeAt(t, img, good, superblockArea)
	d.Call(t, "bdev_aio_create", aioParams(img, "C1"))
	if st := d.ocfStates(t)["V1"]; !st.Started || st.Failed || st.Error != "" {
		t.Fatalf("after the repair V1 is %+v, want started", st)
	}
	uri := d.URI("V1")
	nbdinfoWorks(t, uri) // the pending export starts with V1
	qemuIO(t, uri, "read -P 0x61 0 1M")
	if d.stats(t, "V1").Usage.Dirty.Count == 0 {
		t.Error("V1's dirty data was not loaded")
	}
	d.Stop(t)

	d2 := tv.restart(t)
	if strings.Contains(d2.Stderr(), "level=ERROR") {
		t.Errorf("the restart after the repair logged errors:\n%s", d2.Stderr())
	}
	qemuIO(t, d2.URI("V1"), "read -P 0x61 0 1M")
	qemuIO(t, d2.URI("V2"), "read -P 0x62 0 1M")
	d2.Stop(t)
}

// TestNoVolumeStarts: both caches damaged and a third volume's cache
// image missing: the daemon starts all the same, answers RPC with every
// volume failed or waiting, and stops cleanly.
func TestNoVolumeStarts(t *testing.T) {
	t.Parallel()
	tv := newTwoVolumes(t)
	zeroSuperblocks(t, filepath.Join(tv.files, "c1.bin"))
	corruptEntrySector(t, filepath.Join(tv.files, "c2.bin"))
	// A third volume whose cache image is missing, added to the persisted
	// config as an operator would (bdev_aio_create refuses a missing file
	// at run time).
	core3 := filepath.Join(tv.files, "d3.bin")
	if err := os.WriteFile(core3, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(tv.dataDir, "config.json")
	doc := readConfig(t, cfgPath)
	if len(doc.Subsystems) != 2 || doc.Subsystems[0].Subsystem != "bdev" {
		t.Fatalf("config.json: %+v", doc)
	}
	doc.Subsystems[0].Config = append(doc.Subsystems[0].Config,
		json.RawMessage(fmt.Sprintf(`{"method":"bdev_aio_create","params":{"name":"D3","filename":%q}}`, core3)),
		json.RawMessage(fmt.Sprintf(`{"method":"bdev_aio_create","params":{"name":"C3","filename":%q}}`, filepath.Join(tv.files, "missing.bin"))),
		json.RawMessage(`{"method":"bdev_ocf_create","params":{"name":"V3","mode":"wt","cache_bdev_name":"C3","core_bdev_name":"D3"}}`))
	doc.Subsystems[1].Config = append(doc.Subsystems[1].Config, json.RawMessage(`{"method":"nbd_start_disk","params":{"bdev_name":"V3"}}`))
	writeConfig(t, cfgPath, doc)

	d := tv.restart(t)
	st := d.ocfStates(t)
	if !st["V1"].Failed || !st["V2"].Failed || st["V3"].Started || st["V3"].Failed || !st["V3"].Core.Attached {
		t.Fatalf("volumes %+v, want V1 and V2 failed and V3 waiting for its cache", st)
	}
	var disks []json.RawMessage
	if d.CallInto(t, "nbd_get_disks", nil, &disks); len(disks) != 0 {
		t.Errorf("exports %s with no volume started", disks)
	}
	logs := d.Stderr()
	if !strings.Contains(logs, "failed_volumes=V1,V2") && !strings.Contains(logs, "failed_volumes=V2,V1") {
		t.Errorf("no summary naming the failed volumes:\n%s", logs)
	}
	if !strings.Contains(logs, `OCF vbdev \"V3\" is waiting for its cache bdev \"C3\"`) || !strings.Contains(logs, "missing.bin") {
		t.Errorf("V3's pending export does not name its missing cache, or the log that image:\n%s", logs)
	}
	if out := d.cliOut(t, "cache", "list"); strings.Count(out, " failed ") != 2 || !strings.Contains(out, " waiting ") {
		t.Errorf("cache list:\n%s", out)
	}
	d.Stop(t)
	persisted := strings.Join(persistedMethods(t, tv.dataDir), "\n") + "\n"
	for _, e := range []string{"bdev_aio_create C3", "bdev_ocf_create V3", "nbd_start_disk V3", "bdev_ocf_create V1", "bdev_ocf_create V2"} {
		if !strings.Contains(persisted, e+"\n") {
			t.Errorf("config.json lost %q:\n%s", e, persisted)
		}
	}
}
