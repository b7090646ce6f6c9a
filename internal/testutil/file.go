package testutil

import (
	"os"
	"testing"
)

// ZeroRange overwrites n bytes of the file at path, from off, with zeroes
// and syncs them: a test damages an image on disk this way.
func ZeroRange(t testing.TB, path string, off, n int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(make([]byte, n), off); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
}
