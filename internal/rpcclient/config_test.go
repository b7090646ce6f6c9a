package rpcclient

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"testing"

	"blockcache/internal/jsonrpc"
)

const (
	startup = jsonrpc.StateStartup
	runtime = jsonrpc.StateRuntime
	both    = jsonrpc.StateStartup | jsonrpc.StateRuntime
)

// newConfigApp is a fake daemon with three subsystems (iobuf <- bdev <- nbd)
// and the methods their configs use.
func newConfigApp(t *testing.T, state jsonrpc.State) *fakeApp {
	t.Helper()
	a := newFakeApp(t, state)
	a.register("framework_get_subsystems", both, ok([]map[string]any{
		{"subsystem": "iobuf", "depends_on": []string{}},
		{"subsystem": "bdev", "depends_on": []string{"iobuf"}},
		{"subsystem": "nbd", "depends_on": []string{"bdev"}},
		{"subsystem": "scheduler", "depends_on": []string{}},
	}))
	configs := map[string]json.RawMessage{
		"iobuf":     json.RawMessage(`[{"method":"iobuf_set_options","params":{"small_pool_count":8192}}]`),
		"bdev":      json.RawMessage(`[{"method":"bdev_malloc_create","params":{"name":"Malloc0","num_blocks":16384,"block_size":512,"uuid":"é"}},{"method":"bdev_ocf_create","params":{"name":"Cache0","mode":"wt","cache_line_size":4,"cache_bdev_name":"Malloc0","core_bdev_name":"Malloc1"}},{"method":"bdev_wait_for_examine"}]`),
		"nbd":       json.RawMessage(`[]`),
		"scheduler": json.RawMessage(`[{"method":"framework_set_scheduler","params":{"name":"static"}}]`),
	}
	a.register("framework_get_config", both, func(_ context.Context, p json.RawMessage) (any, error) {
		var q struct {
			Name        string `json:"name" rpc:"required"`
			WithBatches bool   `json:"with_batches"`
		}
		if err := jsonrpc.DecodeParams(p, &q, nil); err != nil {
			return nil, err
		}
		cfg, ok := configs[q.Name]
		if !ok {
			return nil, jsonrpc.Errorf(jsonrpc.CodeInvalidParams, "Subsystem '%s' not found", q.Name)
		}
		return cfg, nil
	})
	a.register("iobuf_set_options", startup, ok(true))
	a.register("framework_set_scheduler", both, ok(true))
	for _, m := range []string{"bdev_malloc_create", "bdev_ocf_create", "bdev_wait_for_examine", "nbd_start_disk"} {
		a.register(m, runtime, ok(true))
	}
	a.register("bdev_fail", runtime, func(context.Context, json.RawMessage) (any, error) {
		return nil, jsonrpc.Errorf(-32603, "Could not create OCF vbdev: %d", -1)
	})
	return a
}

const savedConfig = `{
  "subsystems": [
    {
      "subsystem": "iobuf",
      "config": [
        {
          "method": "iobuf_set_options",
          "params": {
            "small_pool_count": 8192
          }
        }
      ]
    },
    {
      "subsystem": "bdev",
      "config": [
        {
          "method": "bdev_malloc_create",
          "params": {
            "name": "Malloc0",
            "num_blocks": 16384,
            "block_size": 512,
            "uuid": "\u00e9"
          }
        },
        {
          "method": "bdev_ocf_create",
          "params": {
            "name": "Cache0",
            "mode": "wt",
            "cache_line_size": 4,
            "cache_bdev_name": "Malloc0",
            "core_bdev_name": "Malloc1"
          }
        },
        {
          "method": "bdev_wait_for_examine"
        }
      ]
    },
    {
      "subsystem": "nbd",
      "config": []
    },
    {
      "subsystem": "scheduler",
      "config": [
        {
          "method": "framework_set_scheduler",
          "params": {
            "name": "static"
          }
        }
      ]
    }
  ]
}
`

func TestSaveConfig(t *testing.T) {
	a := newConfigApp(t, runtime)
	c := a.dial(t)
	got, err := c.SaveConfig()
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != savedConfig {
		t.Fatalf("save_config output\n%s\nwant\n%s", got, savedConfig)
	}
	calls := a.takeCalls()
	want := []call{{"framework_get_subsystems", ""}}
	for _, s := range []string{"iobuf", "bdev", "nbd", "scheduler"} {
		want = append(want, call{"framework_get_config", `{"name":"` + s + `","with_batches":false}`})
	}
	if fmt.Sprint(calls) != fmt.Sprint(want) {
		t.Fatalf("calls\n%v\nwant\n%v", calls, want)
	}

	// The file is what Python's json.dump(indent=2) would write for it.
	if py, err := exec.LookPath("python3"); err == nil {
		out, err := exec.Command(py, "-c", `import json,sys; json.dump(json.loads(sys.argv[1]), sys.stdout, indent=2); sys.stdout.write("\n")`, string(got)).Output()
		if err != nil || string(out) != string(got) {
			t.Fatalf("python re-dump differs (%v):\n%s", err, out)
		}
	}
}

func TestSaveConfigSubset(t *testing.T) {
	a := newConfigApp(t, runtime)
	c := a.dial(t)
	got, err := c.SaveConfig("nbd")
	if err != nil {
		t.Fatal(err)
	}
	var file struct {
		Subsystems []struct {
			Subsystem string `json:"subsystem"`
		} `json:"subsystems"`
	}
	if err := json.Unmarshal(got, &file); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range file.Subsystems {
		names = append(names, s.Subsystem)
	}
	// nbd and, transitively, what it depends on; in the server's order.
	if fmt.Sprint(names) != "[iobuf bdev nbd]" {
		t.Fatalf("saved %v", names)
	}
	if _, err := c.SaveConfig("nosuch"); err == nil {
		t.Fatal("unknown subsystem accepted")
	}
}

func TestSaveSubsystemConfig(t *testing.T) {
	a := newConfigApp(t, runtime)
	c := a.dial(t)
	got, err := c.SaveSubsystemConfig("scheduler")
	if err != nil {
		t.Fatal(err)
	}
	want := "{\n  \"subsystem\": \"scheduler\",\n  \"config\": [\n    {\n      \"method\": \"framework_set_scheduler\",\n      \"params\": {\n        \"name\": \"static\"\n      }\n    }\n  ]\n}\n"
	if string(got) != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
	_, err = c.SaveSubsystemConfig("nosuch")
	var je *jsonrpc.Error
	if !errors.As(err, &je) || je.Message != "Subsystem 'nosuch' not found" {
		t.Fatalf("unknown subsystem: %v", err)
	}
}

func TestLoadConfigSteppingThroughStates(t *testing.T) {
	a := newConfigApp(t, startup)
	c := a.dial(t)
	skipped, err := c.LoadConfig([]byte(savedConfig))
	if err != nil {
		t.Fatal(err)
	}
	if len(skipped) != 0 {
		t.Fatalf("skipped %v", skipped)
	}
	if a.State() != runtime {
		t.Fatalf("state %v after load_config", a.State())
	}
	got := a.takeCalls()
	want := []call{
		{"rpc_get_methods", `{"include_aliases":false}`},
		// Round 1, startup: what startup allows, then start_init.
		{"rpc_get_methods", `{"current":true,"include_aliases":false}`},
		{"iobuf_set_options", `{"small_pool_count":8192}`},
		{"framework_set_scheduler", `{"name":"static"}`},
		{"framework_start_init", ""},
		// Round 2, runtime: the rest, in file order.
		{"rpc_get_methods", `{"current":true,"include_aliases":false}`},
		// On the wire as rpc.py writes it: non-ASCII escaped.
		{"bdev_malloc_create", `{"name":"Malloc0","num_blocks":16384,"block_size":512,"uuid":"\u00e9"}`},
		{"bdev_ocf_create", `{"name":"Cache0","mode":"wt","cache_line_size":4,"cache_bdev_name":"Malloc0","core_bdev_name":"Malloc1"}`},
		{"bdev_wait_for_examine", ""},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("calls\n%v\nwant\n%v", strings.ReplaceAll(fmt.Sprint(got), "} {", "}\n{"), strings.ReplaceAll(fmt.Sprint(want), "} {", "}\n{"))
	}
}

func TestLoadConfigWhenRunningSkipsStartupMethods(t *testing.T) {
	a := newConfigApp(t, runtime)
	c := a.dial(t)
	skipped, err := c.LoadConfig([]byte(savedConfig))
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(skipped) != "[iobuf_set_options]" {
		t.Fatalf("skipped %v, want [iobuf_set_options]", skipped)
	}
	var methods []string
	for _, c := range a.takeCalls() {
		methods = append(methods, c.Method)
	}
	want := "[rpc_get_methods rpc_get_methods bdev_malloc_create bdev_ocf_create bdev_wait_for_examine framework_set_scheduler rpc_get_methods]"
	if fmt.Sprint(methods) != want {
		t.Fatalf("calls %v\nwant  %v", methods, want)
	}
}

func TestLoadConfigUnknownMethod(t *testing.T) {
	a := newConfigApp(t, startup)
	c := a.dial(t)
	for _, cfg := range []string{
		`{"subsystems":[{"subsystem":"bdev","config":[{"method":"bdev_malloc_create"},{"method":"bdev_nosuch_create"}]}]}`,
		`{"subsystems":[{"subsystem":"bdev","config":[{"params":{}}]}]}`,
		`{"subsystems":[{"subsystem":"bdev","config":[{"method":5}]}]}`,
	} {
		_, err := c.LoadConfig([]byte(cfg))
		if !errors.Is(err, ErrUnknownMethod) || !strings.HasPrefix(err.Error(), MsgUnknownMethod) {
			t.Fatalf("%s: %v", cfg, err)
		}
	}
	for _, call := range a.takeCalls() {
		if call.Method != "rpc_get_methods" {
			t.Fatalf("called %s despite an unknown method", call.Method)
		}
	}
}

func TestLoadConfigEmptyStartsFramework(t *testing.T) {
	a := newConfigApp(t, startup)
	c := a.dial(t)
	if _, err := c.LoadConfig([]byte(`{"subsystems":[{"subsystem":"bdev","config":[]},{"subsystem":"nbd","config":null}]}`)); err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(a.takeCalls()); got != `[{rpc_get_methods {"include_aliases":false}} {framework_start_init }]` {
		t.Fatalf("calls %s", got)
	}
	if a.State() != runtime {
		t.Fatal("framework not started")
	}
	// Running already: nothing to do, and start_init is not listed.
	if _, err := c.LoadConfig([]byte(`{"subsystems":[]}`)); err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(a.takeCalls()); got != `[{rpc_get_methods {"include_aliases":false}}]` {
		t.Fatalf("calls %s", got)
	}
}

func TestLoadConfigStopsAtFirstError(t *testing.T) {
	a := newConfigApp(t, runtime)
	c := a.dial(t)
	_, err := c.LoadConfig([]byte(`{"subsystems":[{"subsystem":"bdev","config":[
		{"method":"bdev_malloc_create","params":{"name":"M","uuid":null}},
		{"method":"bdev_fail","params":{}},
		{"method":"bdev_wait_for_examine"}]}]}`))
	var je *jsonrpc.Error
	if !errors.As(err, &je) || je.Message != "Could not create OCF vbdev: -1" {
		t.Fatalf("err %v", err)
	}
	calls := a.takeCalls()
	if last := calls[len(calls)-1]; last.Method != "bdev_fail" {
		t.Fatalf("went on after the error: %v", calls)
	}
	// Entries are sent as written: null members stay, {} params go.
	if calls[2] != (call{"bdev_malloc_create", `{"name":"M","uuid":null}`}) || calls[3] != (call{"bdev_fail", ""}) {
		t.Fatalf("params not sent as written: %v", calls)
	}
}

func TestLoadConfigMalformed(t *testing.T) {
	a := newConfigApp(t, runtime)
	c := a.dial(t)
	for _, cfg := range []string{
		`not json`,
		`{}`,
		`{"subsystems":[{"subsystem":"bdev"}]}`,
		`{"subsystems":[{"subsystem":"bdev","config":{}}]}`,
		`{"subsystems":[{"subsystem":"bdev","config":[{"method":"bdev_wait_for_examine","extra":1}]}]}`,
	} {
		if _, err := c.LoadConfig([]byte(cfg)); err == nil || errors.As(err, new(*jsonrpc.Error)) {
			t.Errorf("%s: %v", cfg, err)
		}
	}
}

func TestSaveThenLoadRoundTrip(t *testing.T) {
	src := newConfigApp(t, runtime)
	saved, err := src.dial(t).SaveConfig()
	if err != nil {
		t.Fatal(err)
	}
	dst := newConfigApp(t, startup)
	if _, err := dst.dial(t).LoadConfig(saved); err != nil {
		t.Fatal(err)
	}
	var replayed []string
	for _, c := range dst.takeCalls() {
		if c.Method != "rpc_get_methods" {
			replayed = append(replayed, c.Method+" "+c.Params)
		}
	}
	if len(replayed) != 6 || replayed[3] != `bdev_malloc_create {"name":"Malloc0","num_blocks":16384,"block_size":512,"uuid":"\u00e9"}` {
		t.Fatalf("replayed %q", replayed)
	}
}

func TestLoadSubsystemConfig(t *testing.T) {
	a := newConfigApp(t, runtime)
	c := a.dial(t)
	skipped, err := c.LoadSubsystemConfig([]byte(`{"subsystem":"bdev","config":[
		{"method":"iobuf_set_options","params":{"small_pool_count":1}},
		{"method":"bdev_malloc_create","params":{"name":"M"}}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(skipped) != "[iobuf_set_options]" {
		t.Fatalf("skipped %v", skipped)
	}
	want := `[{rpc_get_methods } {rpc_get_methods {"current":true}} {bdev_malloc_create {"name":"M"}}]`
	if got := fmt.Sprint(a.takeCalls()); got != want {
		t.Fatalf("calls %s\nwant  %s", got, want)
	}
}

// Against a server that lists framework_start_init while running (as SPDK
// does), load_config of an empty config calls it and fails, like rpc.py.
func TestLoadConfigEmptyAgainstSPDKListing(t *testing.T) {
	s := jsonrpc.NewServer(jsonrpc.Options{InitialState: runtime})
	s.Register("rpc_get_methods", s.GetMethodsHandler(), jsonrpc.AllowedIn(both))
	s.Register("framework_start_init", ok(true), jsonrpc.AllowedIn(startup))
	path := socketPath(t)
	l, err := jsonrpc.Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(l)
	defer s.Close()
	c, err := Dial(path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = c.LoadConfig([]byte(`{"subsystems":[]}`))
	var je *jsonrpc.Error
	if !errors.As(err, &je) || je.Code != jsonrpc.CodeInvalidState {
		t.Fatalf("got %v, want -32604 as rpc.py gets from SPDK", err)
	}
}
