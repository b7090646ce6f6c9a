package daemon

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestPersistFailureLoggedOnce: with --config, the start says where changes
// go, once; then saves that cannot be written (the data directory is gone)
// log one ERROR however many commands follow, and the first save that works
// again logs one INFO and writes config.json.
func TestPersistFailureLoggedOnce(t *testing.T) {
	d, log, err := startOn(t, `{"subsystems":[{"subsystem":"bdev","config":[
	  {"method":"bdev_malloc_create","params":{"name":"M0","num_blocks":2048,"block_size":512}}]}]}`)
	if err != nil {
		t.Fatal(err)
	}
	persisted := filepath.Join(d.cfg.DataDir, ConfigFileName)
	if n := strings.Count(log.String(), "start-up config replayed; changes are persisted to the data directory"); n != 1 {
		t.Fatalf("%d lines saying where changes go, want 1:\n%s", n, log)
	}
	if !strings.Contains(log.String(), "persisted="+persisted) {
		t.Fatalf("the start line does not name %s:\n%s", persisted, log)
	}
	if err := os.RemoveAll(d.cfg.DataDir); err != nil {
		t.Fatal(err)
	}
	for range 5 {
		d.saveState()
	}
	if n := strings.Count(log.String(), "level=ERROR"); n != 1 || !strings.Contains(log.String(), "path="+persisted) {
		t.Fatalf("%d ERROR lines after 5 failed saves, want 1 naming %s:\n%s", n, persisted, log)
	}
	if err := os.MkdirAll(d.cfg.DataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	d.saveState()
	d.saveState()
	if n := strings.Count(log.String(), "persist config: saved again"); n != 1 {
		t.Fatalf("%d 'saved again' lines, want 1:\n%s", n, log)
	}
	if b, err := os.ReadFile(persisted); err != nil || !strings.Contains(string(b), `"M0"`) {
		t.Fatalf("config.json after the recovery: %v\n%s", err, b)
	}
	if os.RemoveAll(d.cfg.DataDir) != nil {
		t.Fatal("remove the data directory again")
	}
	d.saveState()
	if n := strings.Count(log.String(), "level=ERROR"); n != 2 {
		t.Fatalf("a failure after a recovery: %d ERROR lines in all, want 2:\n%s", n, log)
	}
}

// TestBareConfigPersistsNothing: --bare --config says once that nothing is
// persisted and writes no config.json.
func TestBareConfigPersistsNothing(t *testing.T) {
	d, log, err := startOn(t, `{"subsystems":[]}`)
	if err != nil {
		t.Fatal(err)
	}
	d.cfg.Bare = true // as serve --bare --config sets it before the start
	d.logPersistence()
	if n := strings.Count(log.String(), "changes are not persisted (--bare)"); n != 1 {
		t.Fatalf("%d lines saying nothing is persisted, want 1:\n%s", n, log)
	}
}
