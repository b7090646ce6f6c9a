package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestConfigSaveLoad(t *testing.T) {
	a := startDaemon(t)
	a.malloc(t, "M0", 8192, 512)
	a.malloc(t, "M1", 65536, 512)
	a.ok(t, "cache", "create", "C0", "--mode", "wb", "--cache", "M0", "--core", "M1", "--line-size-kib", "16")
	a.ok(t, "export", "start", "C0")

	file := filepath.Join(t.TempDir(), "config.json")
	if out := a.ok(t, "config", "save", "-o", file); out != "" {
		t.Errorf("config save -o printed %q", out)
	}
	saved, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if out := a.ok(t, "config", "save"); out != string(saved) {
		t.Errorf("config save to stdout differs from -o FILE:\n%s\nvs\n%s", out, saved)
	}
	var doc struct {
		Subsystems []struct {
			Subsystem string            `json:"subsystem"`
			Config    []json.RawMessage `json:"config"`
		} `json:"subsystems"`
	}
	if err := json.Unmarshal(saved, &doc); err != nil {
		t.Fatal(err)
	}
	if len(doc.Subsystems) != 2 || doc.Subsystems[0].Subsystem != "bdev" || doc.Subsystems[1].Subsystem != "nbd" || len(doc.Subsystems[1].Config) != 1 {
		t.Errorf("saved config: %s", saved)
	}
	if saved[len(saved)-1] != '\n' || string(saved[:5]) != "{\n  \"" {
		t.Errorf("saved config is not indented by 2 with a final newline: %q...", saved[:min(len(saved), 20)])
	}
	// Only the bdev subsystem.
	if err := json.Unmarshal([]byte(a.ok(t, "config", "save", "bdev")), &doc); err != nil || len(doc.Subsystems) != 1 || doc.Subsystems[0].Subsystem != "bdev" {
		t.Errorf("config save bdev: %+v, %v", doc, err)
	}
	a.fails(t, []string{"config", "save", "nope"}, `config save: save_config: no subsystem "nope"`)

	// Load into a second daemon from the file, a third from stdin.
	b := startDaemon(t)
	if out := b.ok(t, "config", "load", file); out != "" {
		t.Errorf("config load printed %q", out)
	}
	c := startDaemon(t)
	r := runCLI(t, string(saved), "config", "load", "-s", c.sock)
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("config load from stdin: exit %d, stderr %q", r.code, r.stderr)
	}

	// The bdevs are the same, byte for byte, but for the OCF vbdev's UUID:
	// bdev_ocf_create takes none, so each creation makes a new one (as in
	// SPDK). The base bdevs keep theirs (bdev_malloc_create's "uuid").
	want := a.ok(t, "bdev", "list", "--json")
	for name, d := range map[string]*testDaemon{"file": b, "stdin": c} {
		got := d.ok(t, "bdev", "list", "--json")
		oldUUID, newUUID := bdevUUID(t, want, "C0"), bdevUUID(t, got, "C0")
		if oldUUID == newUUID {
			t.Errorf("C0 has the same UUID %s in both daemons", oldUUID)
		}
		if got = strings.ReplaceAll(got, newUUID, oldUUID); got != want {
			t.Errorf("bdev list --json after config load (%s):\n%s\nwant\n%s", name, got, want)
		}
		checkRow(t, d.ok(t, "cache", "list"), "C0", "started", "wb", "16 KiB", "M0", "yes", "M1", "yes", "-")
		checkRow(t, d.ok(t, "export", "list"), "C0", "nbd://"+d.nbdAddr+"/C0", "started")
	}

	// Failures name what failed.
	b.fails(t, []string{"config", "load", file}, "config load "+file+": File exists") // M0 is there already
	b.fails(t, []string{"config", "load", filepath.Join(t.TempDir(), "missing.json")}, "config load:", "no such file or directory")
	bad := filepath.Join(t.TempDir(), "bad.json")
	if err := os.WriteFile(bad, []byte(`{"subsystems":[{"subsystem":"bdev","config":[{"method":"bdev_frobnicate"}]}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	b.fails(t, []string{"config", "load", bad}, "Unknown method was included in the config file", "bdev_frobnicate")
}

// bdevUUID returns the uuid of the bdev name in bdev list --json output.
func bdevUUID(t *testing.T, out, name string) string {
	t.Helper()
	var bdevs []struct {
		Name string `json:"name"`
		UUID string `json:"uuid"`
	}
	if err := json.Unmarshal([]byte(out), &bdevs); err != nil {
		t.Fatal(err)
	}
	for _, b := range bdevs {
		if b.Name == name && b.UUID != "" {
			return b.UUID
		}
	}
	t.Fatalf("no bdev %q with a uuid in\n%s", name, out)
	return ""
}
