package daemon

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"blockcache/internal/bdev/file"
)

// The embedded default: a cache file and a core file under the data
// directory, a write-through cached volume on them, exported over NBD.
const (
	DefaultVolume     = "cache0"
	defaultCacheBdev  = "cache0_cache"
	defaultCoreBdev   = "cache0_core"
	defaultCacheFile  = "cache.img"
	defaultCoreFile   = "core.img"
	defaultCacheBytes = 256 << 20
	defaultCoreBytes  = 2 << 30
)

// defaultDocument creates the default's sparse image files (if missing) and
// returns the config that builds the default on them.
func (d *Daemon) defaultDocument() (*Document, error) {
	dir, err := filepath.Abs(d.cfg.DataDir)
	if err != nil {
		return nil, err
	}
	cachePath, corePath := filepath.Join(dir, defaultCacheFile), filepath.Join(dir, defaultCoreFile)
	for _, f := range []struct {
		path string
		size int64
	}{{cachePath, defaultCacheBytes}, {corePath, defaultCoreBytes}} {
		switch err := file.CreateSparse(f.path, f.size); {
		case err == nil:
			if err := os.Chmod(f.path, dataFileMode); err != nil {
				return nil, fmt.Errorf("embedded default: %w", err)
			}
		case !os.IsExist(err):
			return nil, fmt.Errorf("embedded default: %w", err)
		}
	}
	raw := func(v any) json.RawMessage {
		b, _ := json.Marshal(v)
		return b
	}
	d.log.Info("creating the embedded default", "data_dir", dir, "volume", DefaultVolume, "mode", "wt")
	return &Document{Subsystems: []Subsystem{
		{Subsystem: "bdev", Config: []Method{
			{Method: "bdev_aio_create", Params: raw(map[string]any{"name": defaultCacheBdev, "filename": cachePath})},
			{Method: "bdev_aio_create", Params: raw(map[string]any{"name": defaultCoreBdev, "filename": corePath})},
			{Method: "bdev_ocf_create", Params: raw(map[string]any{"name": DefaultVolume, "mode": "wt",
				"cache_bdev_name": defaultCacheBdev, "core_bdev_name": defaultCoreBdev})},
			{Method: "bdev_wait_for_examine"},
		}},
		{Subsystem: "nbd", Config: []Method{
			{Method: "nbd_start_disk", Params: raw(map[string]any{"bdev_name": DefaultVolume})},
		}},
	}}, nil
}
