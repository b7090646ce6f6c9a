package e2e

// rpc.py compatibility: every method the daemon registers, driven with
// rpcclient (which sends and reads exactly as SPDK's rpc.py) against a
// --bare daemon, with results and error replies as SPDK gives them
// (docs/rpc.md lists where blockcache differs).

import (
	"encoding/json"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

// registeredMethods is every method blockcache is expected to register
// (rpc_get_methods without aliases, plus framework_start_init, which is
// listed only before init).
var registeredMethods = []string{
	"rpc_get_methods", "spdk_get_version", "framework_wait_init", "framework_start_init",
	"framework_get_subsystems", "framework_get_config", "spdk_kill_instance",
	"bdev_get_bdevs", "bdev_wait_for_examine",
	"bdev_malloc_create", "bdev_malloc_delete", "bdev_aio_create", "bdev_aio_delete",
	"bdev_uring_create", "bdev_uring_delete",
	"bdev_null_create", "bdev_null_delete",
	"bdev_delay_create", "bdev_delay_delete", "bdev_delay_update_latency",
	"bdev_error_create", "bdev_error_delete", "bdev_error_inject_error",
	"bdev_ocf_create", "bdev_ocf_delete", "bdev_ocf_get_bdevs", "bdev_ocf_get_stats",
	"bdev_ocf_reset_stats", "bdev_ocf_set_cache_mode", "bdev_ocf_flush_start", "bdev_ocf_flush_status",
	"bdev_ocf_set_seqcutoff",
	"bdev_ocf_set_fallback_pt", "bdev_ocf_set_cleaning", "bdev_ocf_set_promotion", "bdev_ocf_get_policies", "bdev_ocf_flush_cancel", // blockcache's
	"nbd_start_disk", "nbd_stop_disk", "nbd_get_disks",
	"blockcache_get_metrics",                           // blockcache's (metrics_test.go checks its numbers)
	"bdev_nbd_client_create", "bdev_nbd_client_delete", // blockcache's (remote_*_test.go)
}

// ocfAliases are the 2020 names SPDK still accepts.
var ocfAliases = []string{"construct_ocf_bdev", "delete_ocf_bdev", "get_ocf_stats", "get_ocf_bdevs"}

func TestRPCCompat(t *testing.T) {
	t.Parallel()
	d := StartDaemon(t, DaemonOpts{Bare: true})
	files := t.TempDir()
	// One daemon, subsystem after subsystem: compatKill checks that every
	// method was called on it, then stops it.
	t.Run("framework", func(t *testing.T) { compatFramework(t, d) })
	t.Run("malloc", func(t *testing.T) { compatMalloc(t, d) })
	t.Run("aio", func(t *testing.T) { compatAio(t, d, files) })
	t.Run("uring", func(t *testing.T) { uringCompat(t, d, files) })
	t.Run("null", func(t *testing.T) { compatNull(t, d) })
	t.Run("delay", func(t *testing.T) { compatDelay(t, d) })
	t.Run("error", func(t *testing.T) { compatError(t, d) })
	t.Run("ocf", func(t *testing.T) { compatOCF(t, d) })
	t.Run("nbd", func(t *testing.T) { compatNBD(t, d) })
	t.Run("nbd_client", func(t *testing.T) { exerciseNBDClient(t, d) })
	t.Run("metrics", func(t *testing.T) { compatMetrics(t, d) })
	t.Run("kill", func(t *testing.T) { compatKill(t, d) })
}

// compatFramework: rpc_get_methods (with and without aliases),
// spdk_get_version, the framework_* methods, bdev_wait_for_examine and an
// unknown method.
func compatFramework(t *testing.T, d *Daemon) {
	var methods []string
	d.CallInto(t, "rpc_get_methods", map[string]any{"current": false, "include_aliases": false}, &methods)
	want := slices.DeleteFunc(slices.Clone(registeredMethods), func(m string) bool { return m == "framework_start_init" })
	if missing, extra := setDiff(want, methods), setDiff(methods, want); len(missing)+len(extra) != 0 {
		t.Fatalf("rpc_get_methods: missing %v, not covered by this test %v", missing, extra)
	}
	var current []string
	d.CallInto(t, "rpc_get_methods", map[string]any{"current": true, "include_aliases": false}, &current)
	if slices.Contains(current, "framework_start_init") || len(setDiff(want, current)) != 0 {
		t.Fatalf("rpc_get_methods current: %v", current)
	}
	var withAliases []string
	d.CallInto(t, "rpc_get_methods", map[string]any{"current": false, "include_aliases": true}, &withAliases)
	if missing := setDiff(append(slices.Clone(want), ocfAliases...), withAliases); len(missing) != 0 {
		t.Fatalf("rpc_get_methods include_aliases: missing %v", missing)
	}
	d.expectError(t, "rpc_get_methods", map[string]any{"bogus": true}, -32602, "Invalid parameters")

	res := d.Call(t, "spdk_get_version", nil)
	if k := objectKeys(t, res); !slices.Equal(k, []string{"version", "fields"}) {
		t.Fatalf("spdk_get_version keys %v", k)
	}
	var v struct {
		Version string `json:"version"`
		Fields  struct {
			Major, Minor, Patch int
			Suffix              string
		} `json:"fields"`
	}
	json.Unmarshal(res, &v)
	if !strings.HasPrefix(v.Version, "SPDK v26.05-pre") || v.Fields.Major != 26 || v.Fields.Minor != 5 || v.Fields.Patch != 0 || v.Fields.Suffix != "-pre" {
		t.Fatalf("spdk_get_version: %s", res)
	}
	d.expectError(t, "spdk_get_version", map[string]any{"x": 1}, -32602, "spdk_get_version method requires no parameters")

	expectJSON(t, "framework_wait_init", d.Call(t, "framework_wait_init", nil), "true")
	je := d.CallErr(t, "framework_start_init", nil)
	if je.Code != -32604 || !strings.HasPrefix(je.Message, "Method may only be called before framework is initialized") {
		t.Fatalf("framework_start_init while running: %+v", je)
	}
	expectJSON(t, "framework_get_subsystems", d.Call(t, "framework_get_subsystems", nil),
		`[{"subsystem":"bdev","depends_on":[]},{"subsystem":"nbd","depends_on":["bdev"]}]`)
	expectJSON(t, "empty bdev config", d.Call(t, "framework_get_config", map[string]any{"name": "bdev", "with_batches": false}),
		`[{"method":"bdev_wait_for_examine"}]`)
	expectJSON(t, "empty nbd config", d.Call(t, "framework_get_config", map[string]any{"name": "nbd"}), `[]`)
	d.expectError(t, "framework_get_config", map[string]any{"name": "x", "with_batches": false}, -32602, "Subsystem 'x' not found")
	expectJSON(t, "bdev_wait_for_examine", d.Call(t, "bdev_wait_for_examine", nil), "true")
	d.expectError(t, "no_such_method", nil, -32601, "Method not found")
}

// compatMetrics: blockcache_get_metrics' keys and refusals
// (metrics_test.go checks its numbers).
func compatMetrics(t *testing.T, d *Daemon) {
	res := d.Call(t, "blockcache_get_metrics", nil)
	if k := objectKeys(t, res); !slices.Equal(k, []string{"time_unix_nano", "latency_bounds_seconds", "volumes", "nbd_exports", "nbd_connections"}) {
		t.Fatalf("blockcache_get_metrics keys %v", k)
	}
	d.expectError(t, "blockcache_get_metrics", map[string]any{"name": "Nope"}, -32602, "No such device")
	d.expectError(t, "blockcache_get_metrics", map[string]any{"bogus": 1}, -32602, "Invalid parameters")
}

// compatKill checks that every registered method and alias was called on
// d, then stops it with spdk_kill_instance: it must exit 0 and remove its
// socket.
func compatKill(t *testing.T, d *Daemon) {
	d.expectError(t, "spdk_kill_instance", map[string]any{"sig_name": "SIGBOGUS"}, -32602, "signal type SIGBOGUS is not supported")
	var missing []string
	for _, m := range append(slices.Clone(registeredMethods), ocfAliases...) {
		if m != "spdk_kill_instance" && !d.wasCalled(m) {
			missing = append(missing, m)
		}
	}
	if len(missing) != 0 {
		t.Fatalf("methods not exercised: %v", missing)
	}
	res := d.Call(t, "spdk_kill_instance", map[string]any{"sig_name": "SIGTERM"})
	if s := compactJSON(t, res); s != "true" && s != "{}" {
		t.Fatalf("spdk_kill_instance returned %s", res)
	}
	if code := d.Wait(t, 30*time.Second); code != 0 {
		t.Fatalf("exit status %d after spdk_kill_instance, want 0\n%s", code, d.Stderr())
	}
	if _, err := os.Stat(d.Sock); err == nil {
		t.Fatalf("the RPC socket %s is still there after exit", d.Sock)
	}
}

// setDiff returns the elements of a not in b.
func setDiff(a, b []string) []string {
	var out []string
	for _, x := range a {
		if !slices.Contains(b, x) {
			out = append(out, x)
		}
	}
	return out
}
