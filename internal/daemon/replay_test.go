package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"blockcache/internal/vbdev"
)

// syncBuf is a log sink safe for concurrent writers.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startOn builds a daemon whose start-up config is config (--config), with
// no NBD listener, loads it, and returns the daemon, its log and the start
// error. The daemon is shut down at cleanup.
func startOn(t *testing.T, config string) (*Daemon, *syncBuf, error) {
	t.Helper()
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "start.json")
	if err := os.WriteFile(cfgPath, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	return startWith(t, Config{ConfigFile: cfgPath, DataDir: filepath.Join(dir, "data")})
}

// startWith gives cfg an RPC socket (in a short temporary directory) and a
// log, builds the daemon, which is shut down at cleanup, and loads its
// start-up config; it returns the daemon, its log and the load's error.
func startWith(t *testing.T, cfg Config) (*Daemon, *syncBuf, error) {
	t.Helper()
	sockDir, err := os.MkdirTemp("", "bcd")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	log := &syncBuf{}
	cfg.RPCSocket = filepath.Join(sockDir, "rpc.sock")
	cfg.Log = slog.New(slog.NewTextHandler(log, nil))
	d, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.shutdown() })
	return d, log, d.loadStartupConfig(context.Background())
}

// persisted returns the methods and subjects of the daemon's config.json.
func persisted(t *testing.T, d *Daemon) []string {
	t.Helper()
	doc, err := ReadDocument(filepath.Join(d.cfg.DataDir, ConfigFileName))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, ss := range doc.Subsystems {
		for _, m := range ss.Config {
			out = append(out, m.Method+" "+parseEntry(m).subject())
		}
	}
	return out
}

// logLine returns the first log line containing every one of want.
func logLine(log string, want ...string) string {
	for _, line := range strings.Split(log, "\n") {
		if !slices.ContainsFunc(want, func(w string) bool { return !strings.Contains(line, w) }) {
			return line
		}
	}
	return ""
}

const mixedConfig = `{"subsystems":[
 {"subsystem":"bdev","config":[
  {"method":"bdev_malloc_create","params":{"name":"M0","num_blocks":16384,"block_size":512}},
  {"method":"bdev_malloc_create","params":{"name":"M1","num_blocks":32768,"block_size":512}},
  {"method":"bdev_malloc_create","params":{"name":"M2","num_blocks":32768,"block_size":512}},
  {"method":"bdev_malloc_create","params":{"name":"M3","num_blocks":16384,"block_size":512}},
  {"method":"bdev_malloc_create","params":{"name":"M4","num_blocks":32768,"block_size":512}},
  {"method":"bdev_aio_create","params":{"name":"Missing","filename":"/nonexistent/blockcache/cache.img"}},
  {"method":"bdev_delay_create","params":{"name":"Taken","base_bdev_name":"M4","avg_read_latency":0,"p99_read_latency":0,"avg_write_latency":0,"p99_write_latency":0}},
  {"method":"bdev_ocf_create","params":{"name":"Good","mode":"wt","cache_bdev_name":"M0","core_bdev_name":"M1"}},
  {"method":"bdev_ocf_create","params":{"name":"Waits","mode":"wb","cache_bdev_name":"Missing","core_bdev_name":"M2"}},
  {"method":"bdev_ocf_create","params":{"name":"Bad","mode":"wb","cache_bdev_name":"M3","core_bdev_name":"M4"}},
  {"method":"bdev_wait_for_examine"}]},
 {"subsystem":"nbd","config":[
  {"method":"nbd_start_disk","params":{"bdev_name":"Good"}},
  {"method":"nbd_start_disk","params":{"bdev_name":"Waits"}},
  {"method":"nbd_start_disk","params":{"bdev_name":"Bad"}}]}]}`

// TestStartupFailuresAreNotFatal: a start-up config with a base bdev whose
// file is missing and a cached volume that cannot start (its core is
// claimed) loads everything else; the volume is kept failed with its
// reason, the volume on the missing base waits, each entry that needs
// either is skipped with a log line naming it and why (their exports are
// pending, with the reason); config.json keeps every entry; deleting the
// failed volume drops its export, and creating the missing base starts the
// waiting volume and its export and drops its carried entry.
func TestStartupFailuresAreNotFatal(t *testing.T) {
	d, log, err := startOn(t, mixedConfig)
	if err != nil {
		t.Fatalf("start with failing entries: %v", err)
	}
	states := map[string]vbdev.State{}
	for _, in := range d.ocf.List("") {
		states[in.Name] = in.State
	}
	want := map[string]vbdev.State{"Good": vbdev.StateStarted, "Waits": vbdev.StateWaiting, "Bad": vbdev.StateFailed}
	if len(states) != len(want) {
		t.Fatalf("vbdevs %v, want %v", states, want)
	}
	for name, s := range want {
		if states[name] != s {
			t.Errorf("%s is %v, want %v", name, states[name], s)
		}
	}
	if in, _ := d.ocf.Get("Bad"); in.Err == nil || !strings.Contains(in.Err.Error(), `"bdev_delay Taken"`) {
		t.Errorf("Bad's reason %v does not name who holds its core", in.Err)
	}
	if _, ok := d.Exports()["Good"]; !ok || len(d.Exports()) != 1 {
		t.Errorf("exports %v, want Good alone", d.Exports())
	}

	l := log.String()
	for _, want := range [][]string{
		{"level=ERROR", "OCF vbdev failed to start", "vbdev=Bad", "bdev_delay Taken"},
		{"level=ERROR", "config entry failed; skipped", "method=bdev_aio_create", "/nonexistent/blockcache/cache.img"},
		{"level=WARN", "nbd export pending", "bdev=Bad", `OCF vbdev \"Bad\" failed to start`, "bdev_delay Taken"},
		{"level=WARN", "nbd export pending", "bdev=Waits", `OCF vbdev \"Waits\" is waiting for its cache bdev \"Missing\"`},
		{"level=ERROR", "start-up config: some entries failed", "failed_entries=2", "failed_volumes=Bad"},
	} {
		if logLine(l, want...) == "" {
			t.Errorf("no log line with %q in\n%s", want, l)
		}
	}
	if strings.Contains(l, "No such device") {
		t.Errorf("a log line blames a missing device instead of its cause:\n%s", l)
	}

	got := persisted(t, d)
	for _, e := range []string{"bdev_aio_create Missing", "bdev_ocf_create Bad", "bdev_ocf_create Waits", "nbd_start_disk Good", "nbd_start_disk Bad", "nbd_start_disk Waits"} {
		if !slices.Contains(got, e) {
			t.Errorf("config.json lacks %q: %v", e, got)
		}
	}
	if i := slices.Index(got, "bdev_wait_for_examine "); i < 0 || i < slices.Index(got, "bdev_aio_create Missing") {
		t.Errorf("bdev_wait_for_examine is not after the carried entries: %v", got)
	}

	if _, err := d.rpc.Call(context.Background(), "bdev_ocf_delete", json.RawMessage(`{"name":"Bad"}`)); err != nil {
		t.Fatalf("bdev_ocf_delete of the failed volume: %v", err)
	}
	got = persisted(t, d)
	if slices.Contains(got, "bdev_ocf_create Bad") || slices.Contains(got, "nbd_start_disk Bad") {
		t.Errorf("after deleting Bad, config.json still has it or its export: %v", got)
	}

	if _, err := d.rpc.Call(context.Background(), "bdev_malloc_create", json.RawMessage(`{"name":"Missing","num_blocks":16384,"block_size":512}`)); err != nil {
		t.Fatal(err)
	}
	if in, _ := d.ocf.Get("Waits"); in.State != vbdev.StateStarted {
		t.Fatalf("Waits did not start once its cache exists: %+v", in)
	}
	got = persisted(t, d)
	if slices.Contains(got, "bdev_aio_create Missing") || !slices.Contains(got, "bdev_malloc_create Missing") {
		t.Errorf("the carried bdev_aio_create was not replaced by the live bdev: %v", got)
	}
	if !slices.Contains(got, "nbd_start_disk Waits") {
		t.Errorf("the pending export of Waits was dropped: %v", got)
	}
	for deadline := time.Now().Add(5 * time.Second); d.Exports()["Waits"] == ""; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the pending export of Waits did not start with its volume: exports %v", d.Exports())
		}
	}
}

// TestNoVolumeStarts: a config where no volume can start still starts
// the daemon, and its RPC methods answer.
func TestNoVolumeStarts(t *testing.T) {
	d, _, err := startOn(t, `{"subsystems":[{"subsystem":"bdev","config":[
	  {"method":"bdev_aio_create","params":{"name":"C","filename":"/nonexistent/c.img"}},
	  {"method":"bdev_aio_create","params":{"name":"D","filename":"/nonexistent/d.img"}},
	  {"method":"bdev_ocf_create","params":{"name":"V","mode":"wt","cache_bdev_name":"C","core_bdev_name":"D"}}]},
	  {"subsystem":"nbd","config":[{"method":"nbd_start_disk","params":{"bdev_name":"V"}}]}]}`)
	if err != nil {
		t.Fatalf("start with nothing startable: %v", err)
	}
	res, err := d.rpc.Call(context.Background(), "bdev_ocf_get_bdevs", nil)
	if err != nil || !strings.Contains(string(res), `"name":"V","started":false`) {
		t.Fatalf("bdev_ocf_get_bdevs: %s, %v", res, err)
	}
}

// TestInvalidEntryIsFatal: an entry that is not a valid call (unknown
// method, params that do not decode) stops the start, naming the entry.
func TestInvalidEntryIsFatal(t *testing.T) {
	for _, c := range []struct{ config, want string }{
		{`{"subsystems":[{"subsystem":"bdev","config":[{"method":"bogus_method"}]}]}`, "entry 0 (bogus_method): Method not found"},
		{`{"subsystems":[{"subsystem":"bdev","config":[{"method":"bdev_malloc_create","params":{"name":"A"}}]}]}`, "entry 0 (bdev_malloc_create): spdk_json_decode_object failed"},
		{`{"subsystems":[{"subsystem":"bdev","config":[{"method":"bdev_ocf_create","params":{"name":"V"}}]}]}`, "entry 0 (bdev_ocf_create): Invalid parameters"},
	} {
		if _, _, err := startOn(t, c.config); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("start on %s: %v, want %q", c.config, err, c.want)
		}
	}
}

// TestCarriedMerge pins the rules by which a carried entry is kept or
// dropped, and where it goes.
func TestCarriedMerge(t *testing.T) {
	m := func(method, params string) Method { return Method{Method: method, Params: json.RawMessage(params)} }
	live := func() *Document {
		return &Document{Subsystems: []Subsystem{
			{Subsystem: "bdev", Config: []Method{m("bdev_malloc_create", `{"name":"M0"}`), m("bdev_ocf_create", `{"name":"V","cache_bdev_name":"A","core_bdev_name":"M0"}`), {Method: "bdev_wait_for_examine"}}},
			{Subsystem: "nbd", Config: []Method{m("nbd_start_disk", `{"bdev_name":"V"}`)}},
		}}
	}
	exists := func(name string) bool { return name == "M0" || name == "V" }
	var c carried
	c.set(map[string][]Method{
		"bdev": {
			m("bdev_aio_create", `{"name":"A","filename":"/x"}`),                               // kept: A does not exist
			m("bdev_aio_create", `{"name":"M0","filename":"/y"}`),                              // dropped: M0 exists
			m("bdev_ocf_create", `{"name":"W","cache_bdev_name":"A","core_bdev_name":"Gone"}`), // dropped: Gone is nowhere
			m("bdev_ocf_set_seqcutoff", `{"name":"W","policy":"never"}`),                       // dropped once W is
		},
		"nbd": {
			m("nbd_start_disk", `{"bdev_name":"V"}`), // dropped: superseded by the live export
			m("nbd_start_disk", `{"bdev_name":"A"}`), // kept: a carried entry creates A
			m("nbd_start_disk", `{"bdev_name":"W"}`), // dropped with W
		},
	})
	doc := live()
	c.mergeInto(doc, exists)
	var got []string
	for _, ss := range doc.Subsystems {
		for _, e := range ss.Config {
			got = append(got, e.Method+" "+parseEntry(e).subject())
		}
	}
	want := []string{"bdev_malloc_create M0", "bdev_ocf_create V", "bdev_aio_create A", "bdev_wait_for_examine ",
		"nbd_start_disk V", "nbd_start_disk A"}
	if !slices.Equal(got, want) {
		t.Fatalf("merged config\n got %q\nwant %q", got, want)
	}
	// Dropped for good: a later merge does not bring them back even if
	// their bdevs reappear.
	doc = live()
	c.mergeInto(doc, func(string) bool { return false })
	if n := len(doc.Subsystems[0].Config) + len(doc.Subsystems[1].Config); n != 4+2 {
		t.Errorf("second merge: %+v", doc)
	}
}
