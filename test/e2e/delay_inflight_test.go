package e2e

import (
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"blockcache/internal/testutil"
)

// TestDelayMaxInflight drives bdev_delay_create's max_inflight (ours)
// through the daemon: bad values are refused with the daemon still up, the
// limit shows in the config only when set, and a real client's concurrent
// reads through NBD take one latency per round of max_inflight reads, also
// after the saved config was replayed in a new daemon.
func TestDelayMaxInflight(t *testing.T) {
	t.Parallel()
	env := testutil.NbdshEnv(t)
	const latUS, limit, reads = 50_000, 2, 8
	d := StartDaemon(t, DaemonOpts{Bare: true})
	d.Call(t, "bdev_malloc_create", mallocParams("LimBase", 4, 512))
	d.Call(t, "bdev_malloc_create", mallocParams("FreeBase", 4, 512))
	params := func(base, name string) map[string]any {
		return map[string]any{"base_bdev_name": base, "name": name,
			"avg_read_latency": latUS, "p99_read_latency": latUS, "avg_write_latency": latUS, "p99_write_latency": latUS}
	}

	for _, bad := range []any{-1, 1 << 32, "2", 1.5} {
		p := params("LimBase", "Lim")
		p["max_inflight"] = bad
		je := d.expectError(t, "bdev_delay_create", p, -32603, "spdk_json_decode_object failed")
		if !strings.Contains(je.Data, "max_inflight") {
			t.Errorf("max_inflight %v: data %q does not name the parameter", bad, je.Data)
		}
	}
	d.expectClaimed(t, "LimBase", false)

	p := params("LimBase", "Lim")
	p["max_inflight"] = limit
	d.Call(t, "bdev_delay_create", p)
	d.Call(t, "bdev_delay_create", params("FreeBase", "Free"))
	if cfg := d.configEntry(t, "bdev_delay_create", "name", "Lim"); !strings.Contains(string(cfg), `"max_inflight":2`) {
		t.Fatalf("config entry of a limited delay bdev: %s", cfg)
	}
	if cfg := d.configEntry(t, "bdev_delay_create", "name", "Free"); strings.Contains(string(cfg), "max_inflight") {
		t.Fatalf("config entry of an unlimited delay bdev carries max_inflight: %s", cfg)
	}
	var limURI, freeURI string
	d.CallInto(t, "nbd_start_disk", map[string]any{"bdev_name": "Lim"}, &limURI)
	d.CallInto(t, "nbd_start_disk", map[string]any{"bdev_name": "Free"}, &freeURI)

	lat := time.Duration(latUS) * time.Microsecond
	floor := reads / limit * lat
	limited := concurrentReads(t, env, limURI, reads)
	if limited < floor {
		t.Fatalf("%d concurrent reads of %v, %d at a time, took %v, want at least %v", reads, lat, limit, limited, floor)
	}
	free := concurrentReads(t, env, freeURI, reads)
	if free < lat || free >= limited {
		t.Fatalf("%d concurrent reads without a limit took %v, want at least %v and less than the %v of the limited bdev", reads, free, lat, limited)
	}
	t.Logf("%d reads of %v: %v with max_inflight %d, %v without", reads, lat, limited, limit, free)

	cfgFile := filepath.Join(t.TempDir(), "config.json")
	testutil.Run(t, nil, binPath, "config", "save", "-o", cfgFile, "-s", d.Sock)
	d.Stop(t)
	d2 := StartDaemon(t, DaemonOpts{Bare: true, Config: cfgFile})
	if cfg := d2.configEntry(t, "bdev_delay_create", "name", "Lim"); !strings.Contains(string(cfg), `"max_inflight":2`) {
		t.Fatalf("config entry after replay: %s", cfg)
	}
	if el := concurrentReads(t, env, d2.URI("Lim"), reads); el < floor {
		t.Fatalf("after replay %d concurrent reads took %v, want at least %v", reads, el, floor)
	}
}

// concurrentReads sends n 4 KiB reads at once over one NBD connection and
// returns how long they took, as nbdsh measured it.
func concurrentReads(t *testing.T, env []string, uri string, n int) time.Duration {
	t.Helper()
	script := `
import time
bufs = [nbd.Buffer(4096) for i in range(` + strconv.Itoa(n) + `)]
t0 = time.monotonic()
pending = {h.aio_pread(b, i * 4096) for i, b in enumerate(bufs)}
while pending:
    h.poll(-1)
    pending = {c for c in pending if not h.aio_command_completed(c)}
print("elapsed_us", int((time.monotonic() - t0) * 1e6))
`
	out := testutil.Run(t, env, "nbdsh", "-u", uri, "-c", script)
	_, after, ok := strings.Cut(out, "elapsed_us ")
	if !ok {
		t.Fatalf("nbdsh printed no time:\n%s", out)
	}
	us, err := strconv.Atoi(strings.TrimSpace(after))
	if err != nil {
		t.Fatalf("nbdsh output %q: %v", out, err)
	}
	return time.Duration(us) * time.Microsecond
}
