package testutil

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func TestOpenFlags(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if got := OpenFlags(t, 0, p); len(got) != 0 {
		t.Fatalf("flags of a file not open: %v", got)
	}
	f, err := os.OpenFile(p, os.O_RDWR|syscall.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got := OpenFlags(t, os.Getpid(), p)
	if len(got) != 1 || got[0]&syscall.O_APPEND == 0 || got[0]&syscall.O_ACCMODE != syscall.O_RDWR {
		t.Fatalf("flags %v, want one descriptor, read-write and append", got)
	}
}
