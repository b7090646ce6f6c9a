package bdevtest

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/google/uuid"

	"blockcache/internal/bdev/file"
)

// NewReadOnlyFile returns a file device opened read-only over a new file
// of size bytes in the test's temporary directory, closed when the test
// ends: a device whose Info says ReadOnly.
func NewReadOnlyFile(t testing.TB, name string, size int64) *file.Device {
	t.Helper()
	path := filepath.Join(t.TempDir(), name+".img")
	if err := os.WriteFile(path, make([]byte, size), 0o600); err != nil {
		t.Fatal(err)
	}
	d, err := file.Open(name, path, file.Options{ReadOnly: true, UUID: uuid.New()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}
