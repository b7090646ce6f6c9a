package daemon

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const ramConfig = `{"subsystems":[
 {"subsystem":"bdev","config":[
  {"method":"bdev_malloc_create","params":{"name":"RamCache","num_blocks":16384,"block_size":512}},
  {"method":"bdev_malloc_create","params":{"name":"RamCore","num_blocks":32768,"block_size":512}},
  {"method":"bdev_malloc_create","params":{"name":"RamAlone","num_blocks":2048,"block_size":512}},
  {"method":"bdev_null_create","params":{"name":"Nothing","num_blocks":2048,"block_size":512}},
  {"method":"bdev_ocf_create","params":{"name":"RamVol","mode":"wb","cache_bdev_name":"RamCache","core_bdev_name":"RamCore"}},
  {"method":"bdev_wait_for_examine"}]}]}`

// startFrom builds a daemon on a data directory holding config as its
// persisted config.json, or, with asFile, on config given as --config, and
// loads it; it returns the daemon's log.
func startFrom(t *testing.T, config string, asFile bool) string {
	t.Helper()
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	if err := os.MkdirAll(data, 0o700); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(data, ConfigFileName)
	cfg := Config{DataDir: data}
	if asFile {
		path = filepath.Join(dir, "start.json")
		cfg.ConfigFile = path
	}
	if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	_, log, err := startWith(t, cfg)
	if err != nil {
		t.Fatalf("start: %v\n%s", err, log)
	}
	return log.String()
}

// TestPersistedRAMBdevWarns: a persisted config that re-creates malloc
// bdevs logs one WARN for each, naming it and the volumes on it; a null
// bdev, which holds no data, is not warned about, nor is a --config file.
func TestPersistedRAMBdevWarns(t *testing.T) {
	log := startFrom(t, ramConfig, false)
	for _, want := range [][]string{
		{"level=WARN", "RAM-backed bdev re-created empty", "bdev=RamCache", "volumes=RamVol"},
		{"level=WARN", "RAM-backed bdev re-created empty", "bdev=RamCore", "volumes=RamVol"},
		{"level=WARN", "RAM-backed bdev re-created empty", "bdev=RamAlone", "volumes=none"},
	} {
		if logLine(log, want...) == "" {
			t.Errorf("no log line with %q:\n%s", want, log)
		}
	}
	if n := strings.Count(log, "RAM-backed bdev re-created empty"); n != 3 {
		t.Errorf("%d RAM warnings, want 3 (one per malloc bdev, none for null):\n%s", n, log)
	}
	if strings.Contains(log, "bdev=Nothing") {
		t.Errorf("the null bdev was warned about:\n%s", log)
	}

	if log := startFrom(t, ramConfig, true); strings.Contains(log, "RAM-backed") {
		t.Errorf("a --config file's malloc bdevs were warned about:\n%s", log)
	}
}

// TestRAMCacheWarnKeepsCoreData: a malloc bdev that is only the cache of
// its volumes does not take their data with it (the core keeps it, and a
// clean shutdown wrote the dirty data back): its warning says the volumes
// start cold, not that their data did not survive, which the warning for
// a malloc core still says.
func TestRAMCacheWarnKeepsCoreData(t *testing.T) {
	log := startFrom(t, ramConfig, false)
	cache := logLine(log, "RAM-backed bdev re-created empty", "bdev=RamCache")
	if cache == "" || strings.Contains(cache, "that of the volumes on it") || !strings.Contains(cache, "start cold") {
		t.Errorf("warning for a malloc cache: %q; want one saying its volumes start cold, not that their data is gone", cache)
	}
	core := logLine(log, "RAM-backed bdev re-created empty", "bdev=RamCore")
	if !strings.Contains(core, "that of the volumes on it, did not survive") {
		t.Errorf("warning for a malloc core: %q; want it to say the volumes' data did not survive", core)
	}
}
