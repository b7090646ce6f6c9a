package e2e

// rpc.py compatibility: every method the daemon registers, driven with
// rpcclient (which sends and reads exactly as SPDK's rpc.py) against a
// --bare daemon, with results and error replies as SPDK gives them
// (docs/rpc.md lists where blockcache differs).

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"blockcache/internal/testutil"
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

// objectKeys returns the keys of a JSON object in the order they appear.
func objectKeys(t *testing.T, raw []byte) []string {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(raw))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		t.Fatalf("not a JSON object: %s", raw)
	}
	var keys []string
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, tok.(string))
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			t.Fatal(err)
		}
	}
	return keys
}

// member returns the raw value of key in a JSON object.
func member(t *testing.T, raw []byte, key string) json.RawMessage {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("not a JSON object: %v: %s", err, raw)
	}
	v, ok := m[key]
	if !ok {
		t.Fatalf("no %q in %s", key, raw)
	}
	return v
}

func compactJSON(t *testing.T, raw []byte) string {
	t.Helper()
	var b bytes.Buffer
	if err := json.Compact(&b, raw); err != nil {
		t.Fatalf("invalid JSON: %v: %s", err, raw)
	}
	return b.String()
}

// expectJSON checks that raw is exactly want (as compact JSON, key order
// included).
func expectJSON(t *testing.T, what string, raw []byte, want string) {
	t.Helper()
	if got := compactJSON(t, raw); got != compactJSON(t, []byte(want)) {
		t.Fatalf("%s:\n got %s\nwant %s", what, got, compactJSON(t, []byte(want)))
	}
}

// expectPrefixJSON checks raw against want, an object or an array of
// objects given as rpc.md shows it: each object must hold rpc.md's members
// first, in its order and with its values. blockcache's own additions (e.g.
// fallback_pt) may follow them.
func expectPrefixJSON(t *testing.T, what string, raw []byte, want string) {
	t.Helper()
	var gotElems, wantElems []json.RawMessage
	if strings.HasPrefix(strings.TrimSpace(want), "[") {
		if json.Unmarshal(raw, &gotElems) != nil || json.Unmarshal([]byte(want), &wantElems) != nil || len(gotElems) != len(wantElems) {
			t.Fatalf("%s:\n got %s\nwant %s", what, compactJSON(t, raw), compactJSON(t, []byte(want)))
		}
	} else {
		gotElems, wantElems = []json.RawMessage{raw}, []json.RawMessage{json.RawMessage(want)}
	}
	for i := range gotElems {
		g, w := compactJSON(t, gotElems[i]), strings.TrimSuffix(compactJSON(t, wantElems[i]), "}")
		if g != w+"}" && !strings.HasPrefix(g, w+",") {
			t.Fatalf("%s:\n got %s\nwant %s (further members allowed only after these)", what, compactJSON(t, raw), compactJSON(t, []byte(want)))
		}
	}
}

// getBdev returns the one bdev bdev_get_bdevs names, and the raw object.
func (d *Daemon) getBdev(t *testing.T, name string) (bdevInfo, json.RawMessage) {
	t.Helper()
	var raws []json.RawMessage
	d.CallInto(t, "bdev_get_bdevs", map[string]any{"name": name}, &raws)
	if len(raws) != 1 {
		t.Fatalf("bdev_get_bdevs %s: %d elements, want 1", name, len(raws))
	}
	var b bdevInfo
	if err := json.Unmarshal(raws[0], &b); err != nil {
		t.Fatal(err)
	}
	return b, raws[0]
}

// expectClaimed checks claimed and claim_type of a bdev, raw: claim_type is
// present only when claimed.
func (d *Daemon) expectClaimed(t *testing.T, name string, claimed bool) {
	t.Helper()
	b, raw := d.getBdev(t, name)
	hasType := slices.Contains(objectKeys(t, raw), "claim_type")
	if b.Claimed != claimed || hasType != claimed || (claimed && b.ClaimType != "exclusive_write") {
		t.Fatalf("bdev %s: claimed %v claim_type %q (present %v), want claimed %v%s", name, b.Claimed, b.ClaimType, hasType, claimed,
			map[bool]string{true: " with claim_type exclusive_write", false: " and no claim_type"}[claimed])
	}
}

// bdevNames lists bdev_get_bdevs' names.
func (d *Daemon) bdevNames(t *testing.T) []string {
	t.Helper()
	var all []bdevInfo
	d.CallInto(t, "bdev_get_bdevs", nil, &all)
	var names []string
	for _, b := range all {
		names = append(names, b.Name)
	}
	return names
}

type ocfBdev struct {
	Name    string `json:"name"`
	Started bool   `json:"started"`
	Cache   struct {
		Name     string `json:"name"`
		Attached bool   `json:"attached"`
	} `json:"cache"`
	Core struct {
		Name     string `json:"name"`
		Attached bool   `json:"attached"`
	} `json:"core"`
}

func (d *Daemon) ocfBdevs(t *testing.T, filter string) []ocfBdev {
	t.Helper()
	var p any
	if filter != "" {
		p = map[string]any{"name": filter}
	}
	var out []ocfBdev
	d.CallInto(t, "bdev_ocf_get_bdevs", p, &out)
	return out
}

// configEntries returns framework_get_config's raw entries for a subsystem.
func (d *Daemon) configEntries(t *testing.T, subsystem string) []json.RawMessage {
	t.Helper()
	var out []json.RawMessage
	d.CallInto(t, "framework_get_config", map[string]any{"name": subsystem, "with_batches": false}, &out)
	return out
}

// configEntry finds the entry of method whose params name is name.
func (d *Daemon) configEntry(t *testing.T, method, nameKey, name string) json.RawMessage {
	t.Helper()
	for _, e := range d.configEntries(t, "bdev") {
		var m struct {
			Method string                     `json:"method"`
			Params map[string]json.RawMessage `json:"params"`
		}
		if err := json.Unmarshal(e, &m); err != nil {
			t.Fatal(err)
		}
		if m.Method == method && string(m.Params[nameKey]) == fmt.Sprintf("%q", name) {
			return member(t, e, "params")
		}
	}
	t.Fatalf("framework_get_config bdev has no %s entry for %s", method, name)
	return nil
}

func TestRPCCompat(t *testing.T) {
	t.Parallel()
	d := StartDaemon(t, DaemonOpts{Bare: true})
	files := t.TempDir()

	t.Run("framework", func(t *testing.T) {
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
	})

	t.Run("malloc", func(t *testing.T) {
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
	})

	t.Run("aio", func(t *testing.T) {
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
	})

	t.Run("uring", func(t *testing.T) { uringCompat(t, d, files) })

	t.Run("null", func(t *testing.T) {
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
	})

	t.Run("delay", func(t *testing.T) {
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
	})

	t.Run("error", func(t *testing.T) {
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
	})

	t.Run("ocf", func(t *testing.T) {
		for _, b := range []struct {
			name string
			mib  int
		}{{"Cache0", 16}, {"Core0", 32}, {"Core1", 16}, {"Core2", 8}} {
			d.Call(t, "bdev_malloc_create", mallocParams(b.name, b.mib, 512))
		}
		var name string
		d.CallInto(t, "bdev_ocf_create", ocfParams("Ocf0", "wt", "Cache0", "Core0", 16), &name)
		if name != "Ocf0" {
			t.Fatalf("bdev_ocf_create returned %q", name)
		}
		d.expectError(t, "bdev_ocf_create", ocfParams("Ocf0", "wt", "Cache0", "Core2", 16), -32603, "Could not create OCF vbdev: -1")
		d.expectError(t, "bdev_ocf_create", ocfParams("Core2", "wt", "Cache0", "Core2", 16), -32603, "Could not create OCF vbdev: -1")
		d.expectError(t, "bdev_ocf_create", ocfParams("OcfX", "xx", "Cache0", "Core2", 16), -32603, "Could not create OCF vbdev: -22")
		d.expectError(t, "bdev_ocf_create", ocfParams("OcfX", "wt", "Cache0", "Core2", 3), -32603, "Could not create OCF vbdev: -22")
		d.expectError(t, "bdev_ocf_create", map[string]any{"name": "OcfX", "cache_bdev_name": "Cache0", "core_bdev_name": "Core2"}, -32602, "Invalid parameters")
		bad := ocfParams("OcfX", "wt", "Cache0", "Core2", 16)
		bad["bogus"] = 1
		d.expectError(t, "bdev_ocf_create", bad, -32602, "Invalid parameters")
		if got := d.ocfBdevs(t, ""); len(got) != 1 {
			t.Fatalf("failed creates left vbdevs behind: %+v", got)
		}
		d.expectClaimed(t, "Core2", false)

		b, raw := d.getBdev(t, "Ocf0")
		if (b.ProductName != "SPDK OCF" && !strings.Contains(b.ProductName, "blockcache")) || b.BlockSize != 512 || b.NumBlocks != 65536 ||
			b.UUID == "" || !slices.Contains(b.Aliases, strings.ToLower(b.UUID)) || b.Claimed ||
			!b.SupportedIOTypes["read"] || !b.SupportedIOTypes["write"] || !b.SupportedIOTypes["flush"] {
			t.Fatalf("OCF vbdev: %s", raw)
		}
		expectPrefixJSON(t, "OCF driver_specific", b.DriverSpecific,
			`{"cache_device":"Cache0","core_device":"Core0","mode":"wt","cache_line_size":16,"metadata_volatile":false}`)
		d.expectClaimed(t, "Cache0", true)
		d.expectClaimed(t, "Core0", true)
		d.expectError(t, "nbd_start_disk", map[string]any{"bdev_name": "Core0"}, -1, "Operation not permitted")
		d.expectError(t, "bdev_error_create", map[string]any{"base_name": "Cache0"}, -1, "Operation not permitted")
		d.expectError(t, "bdev_ocf_create", ocfParams("OcfX", "wt", "Core2", "Core0", 0), -32603, "Could not create OCF vbdev: -1")

		// Shared cache: a second core on Cache0.
		d.Call(t, "bdev_ocf_create", ocfParams("Ocf1", "wt", "Cache0", "Core1", 16))
		expectPrefixJSON(t, "bdev_ocf_get_bdevs Cache0", d.Call(t, "bdev_ocf_get_bdevs", map[string]any{"name": "Cache0"}),
			`[{"name":"Ocf0","started":true,"cache":{"name":"Cache0","attached":true},"core":{"name":"Core0","attached":true}},
			  {"name":"Ocf1","started":true,"cache":{"name":"Cache0","attached":true},"core":{"name":"Core1","attached":true}}]`)
		if got := d.ocfBdevs(t, "Core1"); len(got) != 1 || got[0].Name != "Ocf1" {
			t.Fatalf("bdev_ocf_get_bdevs Core1: %+v", got)
		}
		if got := d.ocfBdevs(t, "Ocf0"); len(got) != 1 || got[0].Name != "Ocf0" {
			t.Fatalf("bdev_ocf_get_bdevs Ocf0: %+v", got)
		}
		d.expectError(t, "bdev_ocf_get_bdevs", map[string]any{"name": "Nope"}, -32602, "No such device")
		var viaAlias []ocfBdev
		d.CallInto(t, "get_ocf_bdevs", nil, &viaAlias)
		if len(viaAlias) != 2 {
			t.Fatalf("get_ocf_bdevs (alias): %+v", viaAlias)
		}

		// Stats, after some IO.
		var uri string
		d.CallInto(t, "nbd_start_disk", map[string]any{"bdev_name": "Ocf0"}, &uri)
		qemuIO(t, uri, "write -P 0x33 0 1m", "read -P 0x33 0 1m", "read -P 0 4m 1m")
		raw = d.Call(t, "bdev_ocf_get_stats", map[string]any{"name": "Ocf0"})
		checkStatsShape(t, raw)
		var s ocfStats
		json.Unmarshal(raw, &s)
		if s.Usage.Occupancy.Count == 0 || s.Requests.WrTotal.Count == 0 || s.Requests.RdTotal.Count == 0 ||
			s.Requests.Total.Percentage != "100.0" {
			t.Fatalf("stats after IO: %s", raw)
		}
		if got := d.Call(t, "get_ocf_stats", map[string]any{"name": "Ocf0"}); compactJSON(t, got) != compactJSON(t, raw) {
			t.Fatalf("get_ocf_stats (alias) differs:\n%s\n%s", got, raw)
		}
		d.expectError(t, "bdev_ocf_get_stats", map[string]any{"name": "Nope"}, -32602, "No such device")
		d.expectError(t, "bdev_ocf_get_stats", nil, -32602, "Invalid parameters")
		expectJSON(t, "bdev_ocf_reset_stats", d.Call(t, "bdev_ocf_reset_stats", map[string]any{"name": "Ocf0"}), "true")
		if s := d.stats(t, "Ocf0"); s.Requests.Total.Count != 0 || s.Requests.Total.Percentage != "0.0" || s.Usage.Occupancy.Count == 0 {
			t.Fatalf("stats after reset: %+v", s)
		}
		d.expectError(t, "bdev_ocf_reset_stats", map[string]any{"name": "Nope"}, -32602, "No such device")

		// Mode changes show in bdev_get_bdevs and the config, for every
		// vbdev on the cache.
		var mode string
		d.CallInto(t, "bdev_ocf_set_cache_mode", map[string]any{"name": "Ocf0", "mode": "wb"}, &mode)
		if mode != "wb" {
			t.Fatalf("bdev_ocf_set_cache_mode returned %q", mode)
		}
		d.expectError(t, "bdev_ocf_set_cache_mode", map[string]any{"name": "Ocf0", "mode": "xx"}, -32603, "Could not change OCF vbdev cache mode: -22")
		d.expectError(t, "bdev_ocf_set_cache_mode", map[string]any{"name": "Nope", "mode": "wt"}, -32602, "No such device")
		for _, v := range []string{"Ocf0", "Ocf1"} {
			b, _ := d.getBdev(t, v)
			var ds ocfDriverSpecific
			json.Unmarshal(b.DriverSpecific, &ds)
			if ds.Mode != "wb" {
				t.Fatalf("%s driver_specific after set_cache_mode wb: %s", v, b.DriverSpecific)
			}
		}
		// A background flush writes the dirty data back.
		qemuIO(t, uri, "write -P 0x34 2m 1m")
		if s := d.stats(t, "Ocf0"); s.Usage.Dirty.Count == 0 {
			t.Fatalf("no dirty data to flush in wb: %+v", s.Usage)
		}
		expectJSON(t, "bdev_ocf_flush_start", d.Call(t, "bdev_ocf_flush_start", map[string]any{"name": "Ocf0"}), "true")
		deadline := time.Now().Add(10 * time.Second)
		for {
			raw := d.Call(t, "bdev_ocf_flush_status", map[string]any{"name": "Ocf0"})
			var st struct {
				InProgress bool   `json:"in_progress"`
				Status     *int32 `json:"status"`
			}
			json.Unmarshal(raw, &st)
			keys := objectKeys(t, raw)
			if st.InProgress {
				if len(keys) == 0 || keys[0] != "in_progress" || slices.Contains(keys, "status") {
					t.Fatalf("bdev_ocf_flush_status while flushing: %s", raw)
				}
				if time.Now().After(deadline) {
					t.Fatalf("flush still in progress after 10 s: %s", raw)
				}
				time.Sleep(20 * time.Millisecond)
				continue
			}
			if len(keys) < 2 || keys[0] != "in_progress" || keys[1] != "status" || st.Status == nil || *st.Status != 0 {
				t.Fatalf("bdev_ocf_flush_status when done: %s, want in_progress false and status 0 first", raw)
			}
			break
		}
		if s := d.stats(t, "Ocf0"); s.Usage.Dirty.Count != 0 {
			t.Fatalf("%d dirty blocks after the flush finished", s.Usage.Dirty.Count)
		}
		expectJSON(t, "bdev_ocf_set_fallback_pt", d.Call(t, "bdev_ocf_set_fallback_pt", map[string]any{"name": "Ocf0", "threshold": 5}), "true")
		if b, _ := d.getBdev(t, "Ocf0"); !strings.Contains(string(b.DriverSpecific), `"fallback_pt_threshold":5`) {
			t.Fatalf("driver_specific after bdev_ocf_set_fallback_pt: %s", b.DriverSpecific)
		}
		d.expectError(t, "bdev_ocf_flush_start", map[string]any{"name": "Nope"}, -32602, "No such device")
		d.expectError(t, "bdev_ocf_flush_status", map[string]any{"name": "Nope"}, -32602, "No such device")
		d.expectError(t, "bdev_ocf_flush_start", map[string]any{}, -32602, "Invalid parameters")
		// Nothing to cancel (flushcancel_test.go cancels a running one).
		expectJSON(t, "bdev_ocf_flush_cancel", d.Call(t, "bdev_ocf_flush_cancel", map[string]any{"name": "Ocf0"}), "false")
		d.expectError(t, "bdev_ocf_flush_cancel", map[string]any{"name": "Nope"}, -32602, "No such device")
		d.expectError(t, "bdev_ocf_flush_cancel", map[string]any{}, -32602, "Invalid parameters")
		expectJSON(t, "Ocf0 config entry", d.configEntry(t, "bdev_ocf_create", "name", "Ocf0"),
			`{"name":"Ocf0","mode":"wb","cache_line_size":16,"cache_bdev_name":"Cache0","core_bdev_name":"Core0"}`)
		checkConfigOrder(t, d.configEntries(t, "bdev"))

		// Policies (policies_test.go), on the two vbdevs sharing Cache0.
		checkPolicyMethods(t, d, "Ocf0", "Ocf1")

		// A vbdev waiting for its cache.
		d.CallInto(t, "bdev_ocf_create", ocfParams("Wait0", "wt", "LateCache", "Core2", 0), &name)
		if name != "Wait0" {
			t.Fatalf("bdev_ocf_create of a waiting vbdev returned %q", name)
		}
		expectPrefixJSON(t, "waiting vbdev", d.Call(t, "bdev_ocf_get_bdevs", map[string]any{"name": "LateCache"}),
			`[{"name":"Wait0","started":false,"cache":{"name":"LateCache","attached":false},"core":{"name":"Core2","attached":true}}]`)
		d.expectClaimed(t, "Core2", true)
		d.expectError(t, "bdev_get_bdevs", map[string]any{"name": "Wait0"}, -19, "No such device")
		if je := d.CallErr(t, "bdev_ocf_get_stats", map[string]any{"name": "Wait0"}); je.Code != -32603 || !strings.HasPrefix(je.Message, "Could not get stats: ") {
			t.Fatalf("bdev_ocf_get_stats of a waiting vbdev: %+v", je)
		}
		for _, e := range d.configEntries(t, "bdev") {
			if strings.Contains(string(e), `"Wait0"`) {
				t.Fatalf("a vbdev that has not started is in the config: %s", e)
			}
		}
		d.expectError(t, "bdev_ocf_flush_start", map[string]any{"name": "Wait0"}, -32602, "Couldn't flush cache: device not attached")
		d.expectError(t, "bdev_ocf_set_fallback_pt", map[string]any{"name": "Wait0", "threshold": 5}, -32603, "Could not set fallback pass-through threshold: -19")
		checkPolicyMethodsNotStarted(t, d, "Wait0")
		d.expectError(t, "bdev_ocf_create", ocfParams("Wait0", "wt", "LateCache", "Core2", 0), -32603, "Could not create OCF vbdev: -1")
		d.Call(t, "bdev_malloc_create", mallocParams("LateCache", 8, 512))
		if got := d.ocfBdevs(t, "Wait0"); len(got) != 1 || !got[0].Started || !got[0].Cache.Attached {
			t.Fatalf("Wait0 after its cache appeared: %+v", got)
		}
		b, _ = d.getBdev(t, "Wait0")
		expectPrefixJSON(t, "Wait0 driver_specific", b.DriverSpecific,
			`{"cache_device":"LateCache","core_device":"Core2","mode":"wt","cache_line_size":4,"metadata_volatile":false}`)
		d.expectClaimed(t, "LateCache", true)
		expectJSON(t, "bdev_ocf_delete", d.Call(t, "bdev_ocf_delete", map[string]any{"name": "Wait0"}), "true")
		d.expectError(t, "bdev_ocf_delete", map[string]any{"name": "Wait0"}, -32602, "No such device")
		d.expectError(t, "bdev_ocf_get_bdevs", map[string]any{"name": "Wait0"}, -32602, "No such device")
		d.expectError(t, "bdev_get_bdevs", map[string]any{"name": "Wait0"}, -19, "No such device")
		d.expectClaimed(t, "LateCache", false)
		d.expectClaimed(t, "Core2", false)

		// The 2020 names create and delete too.
		d.Call(t, "construct_ocf_bdev", ocfParams("Old0", "pt", "LateCache", "Core2", 0))
		if got := d.ocfBdevs(t, "Old0"); len(got) != 1 || !got[0].Started {
			t.Fatalf("construct_ocf_bdev: %+v", got)
		}
		d.Call(t, "delete_ocf_bdev", map[string]any{"name": "Old0"})
		d.expectClaimed(t, "Core2", false)

		// Hot-remove of a core: its volume goes, the vbdev waits for the
		// core on the shared cache, which stays.
		d.Call(t, "bdev_malloc_delete", map[string]any{"name": "Core1"})
		d.expectError(t, "bdev_get_bdevs", map[string]any{"name": "Ocf1"}, -19, "No such device")
		if got := d.ocfBdevs(t, ""); len(got) != 2 || got[0].Name != "Ocf0" || !got[0].Started ||
			got[1].Name != "Ocf1" || got[1].Started || got[1].Core.Attached || !got[1].Cache.Attached {
			t.Fatalf("vbdevs after removing Core1: %+v", got)
		}
		d.expectClaimed(t, "Cache0", true)
		qemuIO(t, uri, "read -P 0x33 0 1m")

		// Hot-remove of the cache under an export: the vbdevs (the waiting
		// Ocf1 too) and the export go, the core is released.
		d.Call(t, "bdev_malloc_delete", map[string]any{"name": "Cache0"})
		d.expectError(t, "bdev_get_bdevs", map[string]any{"name": "Ocf0"}, -19, "No such device")
		if got := d.ocfBdevs(t, ""); len(got) != 0 {
			t.Fatalf("vbdevs after removing Cache0: %+v", got)
		}
		d.expectClaimed(t, "Core0", false)
		var disks []nbdDisk
		d.CallInto(t, "nbd_get_disks", nil, &disks)
		if len(disks) != 0 {
			t.Fatalf("exports after the exported vbdev was hot-removed: %+v", disks)
		}
		for _, n := range []string{"Core0", "Core2", "LateCache"} {
			d.Call(t, "bdev_malloc_delete", map[string]any{"name": n})
		}
	})

	t.Run("nbd", func(t *testing.T) {
		d.Call(t, "bdev_malloc_create", mallocParams("N0", 4, 512))
		var uri string
		d.CallInto(t, "nbd_start_disk", map[string]any{"bdev_name": "N0"}, &uri)
		if uri != d.URI("N0") {
			t.Fatalf("nbd_start_disk returned %q, want %q", uri, d.URI("N0"))
		}
		disk := fmt.Sprintf(`[{"nbd_device":%q,"bdev_name":"N0"}]`, uri)
		expectJSON(t, "nbd_get_disks", d.Call(t, "nbd_get_disks", nil), disk)
		expectJSON(t, "nbd_get_disks one", d.Call(t, "nbd_get_disks", map[string]any{"nbd_device": uri}), disk)
		d.expectError(t, "nbd_get_disks", map[string]any{"nbd_device": "/dev/nbd9"}, -19, "No such device")
		expectJSON(t, "nbd config", d.Call(t, "framework_get_config", map[string]any{"name": "nbd", "with_batches": false}),
			fmt.Sprintf(`[{"method":"nbd_start_disk","params":{"bdev_name":"N0","nbd_device":%q}}]`, uri))
		d.expectError(t, "nbd_start_disk", map[string]any{"bdev_name": "N0"}, -16, "Device or resource busy")
		d.expectError(t, "nbd_start_disk", map[string]any{"bdev_name": "Nope"}, -19, "No such device")
		d.expectError(t, "nbd_start_disk", map[string]any{}, -32603, "spdk_json_decode_object failed")
		// Kernel NBD devices are refused wherever the node exists or not,
		// with the URI the export is reached at instead.
		if je := d.expectError(t, "nbd_start_disk", map[string]any{"bdev_name": "N0", "nbd_device": "/dev/nbd0"}, -19,
			"kernel NBD devices are not supported: /dev/nbd0"); !strings.Contains(je.Data, "own NBD server") || !strings.Contains(je.Data, d.URI("N0")) {
			t.Fatalf("nbd_start_disk on /dev/nbd0: data %q, want blockcache's NBD server and %s", je.Data, d.URI("N0"))
		}
		qemuIO(t, uri, "write -P 0x77 0 64k", "read -P 0x77 0 64k")
		expectJSON(t, "nbd_stop_disk", d.Call(t, "nbd_stop_disk", map[string]any{"nbd_device": uri}), "true")
		d.expectError(t, "nbd_stop_disk", map[string]any{"nbd_device": uri}, -19, "No such device")
		d.expectError(t, "nbd_stop_disk", map[string]any{"nbd_device": "foo"}, -19, "invalid nbd device")
		d.expectError(t, "nbd_stop_disk", map[string]any{}, -32603, "spdk_json_decode_object failed")
		expectJSON(t, "nbd_get_disks after stop", d.Call(t, "nbd_get_disks", nil), "[]")
		if out, err := testutil.RunErr(t, nil, "nbdinfo", uri); err == nil {
			t.Fatalf("nbdinfo of a stopped export succeeded:\n%s", out)
		}
		d.expectClaimed(t, "N0", false)
	})

	t.Run("nbd_client", func(t *testing.T) { exerciseNBDClient(t, d) })

	t.Run("metrics", func(t *testing.T) {
		res := d.Call(t, "blockcache_get_metrics", nil)
		if k := objectKeys(t, res); !slices.Equal(k, []string{"time_unix_nano", "latency_bounds_seconds", "volumes", "nbd_exports", "nbd_connections"}) {
			t.Fatalf("blockcache_get_metrics keys %v", k)
		}
		d.expectError(t, "blockcache_get_metrics", map[string]any{"name": "Nope"}, -32602, "No such device")
		d.expectError(t, "blockcache_get_metrics", map[string]any{"bogus": 1}, -32602, "Invalid parameters")
	})

	t.Run("kill", func(t *testing.T) {
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
	})
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

var percentRE = regexp.MustCompile(`^[0-9]+\.[0-9]{1,2}$`)

// checkStatsShape checks bdev_ocf_get_stats' groups, keys and leaves in
// rpc.md's order.
func checkStatsShape(t *testing.T, raw json.RawMessage) {
	t.Helper()
	groups := []struct {
		name  string
		keys  []string
		units string
	}{
		{"usage", []string{"occupancy", "free", "clean", "dirty"}, "4KiB blocks"},
		{"requests", []string{"rd_hits", "rd_partial_misses", "rd_full_misses", "rd_total", "wr_hits",
			"wr_partial_misses", "wr_full_misses", "wr_total", "rd_pt", "wr_pt", "serviced", "total"}, "Requests"},
		{"blocks", []string{"core_volume_rd", "core_volume_wr", "core_volume_total", "cache_volume_rd", "cache_volume_wr",
			"cache_volume_total", "volume_rd", "volume_wr", "volume_total"}, "4KiB blocks"},
		{"errors", []string{"core_volume_rd", "core_volume_wr", "core_volume_total", "cache_volume_rd", "cache_volume_wr",
			"cache_volume_total", "total"}, "Requests"},
	}
	if k := objectKeys(t, raw); !slices.Equal(k, []string{"usage", "requests", "blocks", "errors"}) {
		t.Fatalf("stats groups %v", k)
	}
	for _, g := range groups {
		graw := member(t, raw, g.name)
		if k := objectKeys(t, graw); !slices.Equal(k, g.keys) {
			t.Fatalf("stats %s keys\n got %v\nwant %v", g.name, k, g.keys)
		}
		for _, k := range g.keys {
			leaf := member(t, graw, k)
			if lk := objectKeys(t, leaf); !slices.Equal(lk, []string{"count", "percentage", "units"}) {
				t.Fatalf("stats %s.%s keys %v", g.name, k, lk)
			}
			var l statLeaf
			if err := json.Unmarshal(leaf, &l); err != nil {
				t.Fatalf("stats %s.%s: %v: %s", g.name, k, err, leaf)
			}
			if !percentRE.MatchString(l.Percentage) || l.Units != g.units {
				t.Fatalf("stats %s.%s: %s", g.name, k, leaf)
			}
		}
	}
	// usage percentages are of the cache size: occupancy + free.
	var u struct {
		Occupancy, Free statLeaf
	}
	json.Unmarshal(member(t, raw, "usage"), &u)
	if total := u.Occupancy.Count + u.Free.Count; total != 0 {
		f := u.Occupancy.Count * 10000 / total
		if want := fmt.Sprintf("%d.%d", f/100, f%100); u.Occupancy.Percentage != want {
			t.Fatalf("occupancy %d of %d: percentage %q, want %q", u.Occupancy.Count, total, u.Occupancy.Percentage, want)
		}
	}
}

// checkConfigOrder checks that every bdev_ocf_create entry comes after the
// create entries of its bases, and that the list ends with
// bdev_wait_for_examine.
func checkConfigOrder(t *testing.T, entries []json.RawMessage) {
	t.Helper()
	seen := map[string]bool{}
	for i, e := range entries {
		var m struct {
			Method string         `json:"method"`
			Params map[string]any `json:"params"`
		}
		json.Unmarshal(e, &m)
		if i == len(entries)-1 {
			if m.Method != "bdev_wait_for_examine" || m.Params != nil {
				t.Fatalf("bdev config ends with %s", e)
			}
			break
		}
		if m.Method == "bdev_ocf_create" {
			for _, k := range []string{"cache_bdev_name", "core_bdev_name"} {
				if !seen[fmt.Sprint(m.Params[k])] {
					t.Fatalf("%s comes before the entry creating its %s", e, k)
				}
			}
		}
		if n, ok := m.Params["name"].(string); ok {
			seen[n] = true
		}
	}
}

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
