package daemon

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"blockcache/internal/config"
)

// Document is an SPDK JSON config: what rpc.py save_config prints and
// load_config and --config read.
type Document struct {
	Subsystems []Subsystem `json:"subsystems"`
}

// Subsystem is one subsystem's config.
type Subsystem struct {
	Subsystem string   `json:"subsystem"`
	Config    []Method `json:"config"`
}

// Method is one {method, params} call.
type Method struct {
	Method string          `json:"method"`
	Params json.RawMessage `json:"params,omitempty"`
}

// ReadDocument reads and parses a JSON config file.
func ReadDocument(path string) (*Document, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	var doc Document
	if err := json.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("parse config %s: %w", path, err)
	}
	return &doc, nil
}

// writeFileAtomic replaces path with data so that a crash leaves either the
// old or the new file: write a temporary file beside it, fsync, rename,
// fsync the directory.
func writeFileAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op once renamed
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// readINI reads a legacy INI config as a Document.
func readINI(path string) (*Document, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read ini config: %w", err)
	}
	defer f.Close()
	calls, err := config.ParseINI(path, f)
	if err != nil {
		return nil, fmt.Errorf("ini config: %w", err)
	}
	ss := Subsystem{Subsystem: "bdev"}
	for _, c := range calls {
		params, err := json.Marshal(c.Params)
		if err != nil {
			return nil, err
		}
		ss.Config = append(ss.Config, Method{Method: c.Method, Params: params})
	}
	ss.Config = append(ss.Config, Method{Method: "bdev_wait_for_examine"})
	return &Document{Subsystems: []Subsystem{ss}}, nil
}
