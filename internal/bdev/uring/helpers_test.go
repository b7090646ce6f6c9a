package uring

import (
	"os"
	"path/filepath"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// newTestRing creates a ring closed at cleanup.
func newTestRing(t testing.TB, depth int) *Ring {
	t.Helper()
	r, err := New(depth, Options{})
	if err != nil {
		t.Fatalf("New(%d): %v", depth, err)
	}
	t.Cleanup(func() {
		if err := r.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return r
}

// tempFile creates a file of size bytes under dir and opens it with
// flags (O_RDWR added), closed at cleanup.
func tempFile(t testing.TB, dir, name string, size int64, flags int) int {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, size); err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_CLOEXEC|flags, 0)
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

// alignedBuf returns n bytes at a 4 KiB boundary, as O_DIRECT needs.
func alignedBuf(n int) []byte {
	b := make([]byte, n+4096)
	skip := (4096 - int(uintptr(unsafe.Pointer(&b[0]))%4096)) % 4096
	return b[skip : skip+n : skip+n]
}
