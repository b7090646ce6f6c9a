package malloc_test

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/google/uuid"

	"blockcache/internal/bdev"
	"blockcache/internal/bdev/malloc"
	"blockcache/internal/sysmem"
)

// fakeMemory is a probe that sees availKiB of MemAvailable and no cgroup.
func fakeMemory(t *testing.T, availKiB int64) sysmem.Probe {
	t.Helper()
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "proc"), 0o755); err != nil {
		t.Fatal(err)
	}
	mi := "MemTotal: 99999999 kB\nMemAvailable: " + strconv.FormatInt(availKiB, 10) + " kB\n"
	if err := os.WriteFile(filepath.Join(root, "proc", "meminfo"), []byte(mi), 0o644); err != nil {
		t.Fatal(err)
	}
	return sysmem.Probe{Root: root}
}

func TestNewRefusesMoreThanAvailable(t *testing.T) {
	mem := fakeMemory(t, 1024) // 1 MiB
	_, err := malloc.NewChecked("Big", uuid.Nil, 512, 4096, mem)
	if !errors.Is(err, sysmem.ErrNotEnough) || bdev.Errno(err) != syscall.ENOMEM {
		t.Fatalf("2 MiB with 1 MiB available: %v (errno %v), want ErrNotEnough and ENOMEM", err, bdev.Errno(err))
	}
	for _, s := range []string{`malloc "Big"`, "2097152 bytes requested", "1048576 available", "MemAvailable"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("message %q lacks %q", err, s)
		}
	}
	d, err := malloc.NewChecked("Small", uuid.Nil, 512, 1024, mem)
	if err != nil {
		t.Fatalf("512 KiB with 1 MiB available: %v", err)
	}
	d.Close()
}

func TestNewRefusesMoreThanTheMachine(t *testing.T) {
	// 1 EiB: no machine has it, so the real probe refuses it before
	// allocating anything.
	_, err := malloc.New("Huge", uuid.Nil, 4096, 1<<48)
	if bdev.Errno(err) != syscall.ENOMEM || !strings.Contains(err.Error(), "1152921504606846976 bytes requested") {
		t.Fatalf("1 EiB: %v, want ENOMEM with the size", err)
	}
}

func TestNewBacksItsMemory(t *testing.T) {
	const size = 128 << 20
	before := rssBytes(t)
	d, err := malloc.New("Backed", uuid.Nil, 4096, size/4096)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if grew := rssBytes(t) - before; grew < size*3/4 {
		t.Fatalf("RSS grew by %d bytes for a %d-byte device: its memory is not backed", grew, size)
	}
}

func TestNewErrorQuotesAnExcerptOfTheName(t *testing.T) {
	name := strings.Repeat("n", 1<<20)
	_, err := malloc.New(name, uuid.Nil, 1000, 8)
	if !errors.Is(err, bdev.ErrInvalidIO) {
		t.Fatalf("New = %v, want ErrInvalidIO", err)
	}
	if len(err.Error()) > 300 || !strings.Contains(err.Error(), "(1048576 bytes)") {
		t.Fatalf("error of %d bytes: %.300s", len(err.Error()), err)
	}
}

// rssBytes reads VmRSS from /proc/self/status.
func rssBytes(t *testing.T) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmRSS in /proc/self/status")
	return 0
}
