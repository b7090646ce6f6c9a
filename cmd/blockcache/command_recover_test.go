package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"blockcache/internal/ocf/metadata"
	"blockcache/internal/testutil"
)

// coreImage makes a zeroed core image file of size bytes.
func coreImage(t *testing.T, size int64) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "core.img")
	if err := os.WriteFile(path, make([]byte, size), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// wantRecovered is the core image buildImage's dirty data makes of a
// zeroed core, with the dirty lines of cache lines lost left out (cache
// lines 40..59 hold core lines 100..119, cache line 60 the partial write).
func wantRecovered(lost func(cacheLine int) bool) []byte {
	b := make([]byte, imageCoreLen)
	for i := range dirtyFull {
		if !lost(cleanLines + i) {
			copy(b[(100+i)*imageLine:], bytes.Repeat([]byte{0xd0 + byte(i)}, imageLine))
		}
	}
	if !lost(cleanLines + dirtyFull) {
		copy(b[partialCore*imageLine+2*512:], bytes.Repeat([]byte{0xee}, 1024))
	}
	return b
}

// TestRecoverZeroedSuperblocks: both superblocks zeroed, recover derives
// the geometry from the entries; --dry-run lists the writes and writes
// nothing; the real run brings every dirty sector back to the core, byte
// for byte, and never writes to the cache image.
func TestRecoverZeroedSuperblocks(t *testing.T) {
	path, id := buildImage(t, false)
	testutil.ZeroRange(t, path, 0, metadata.SuperblockArea)
	core := coreImage(t, imageCoreLen)
	cacheBefore := readFile(t, path)

	r := offline(t, "recover", path, "--core", "3="+core, "--dry-run")
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("dry run: exit %d, stderr %q\n%s", r.code, r.stderr, r.stdout)
	}
	tag := metadata.TagOf(id).String()
	for _, want := range []string{
		"cache        " + tag + "... (tag of 6 intact entry sectors; no superblock)",
		"copy A (byte 0): no superblock", "copy B (byte 65536): no superblock",
		"geometry     4 KiB lines, 256 lines", "(from the entry area",
		"61 mapped lines, 21 dirty (81 KiB)",
		"core 3       21 dirty lines (81 KiB) to " + core,
		// Core lines 100..119 are contiguous on both sides: one run.
		"would write core 3 (" + core + ") bytes 409600..491519 (80 KiB)",
		"would write core 3 (" + core + ") bytes 820224..821247 (1 KiB)",
		"dry run: 21 dirty lines (81 KiB) would be written back; nothing was written",
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("dry run output lacks %q:\n%s", want, r.stdout)
		}
	}
	if !bytes.Equal(readFile(t, core), make([]byte, imageCoreLen)) {
		t.Fatal("dry run wrote to the core")
	}

	r = offline(t, "recover", path, "--core", "3="+core)
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("recover: exit %d, stderr %q\n%s", r.code, r.stderr, r.stdout)
	}
	if !strings.Contains(r.stdout, "recovered 21 of 21 dirty lines") || !strings.Contains(r.stdout, "core 3: wrote 81 KiB back to "+core) {
		t.Errorf("recover output:\n%s", r.stdout)
	}
	if got, want := readFile(t, core), wantRecovered(func(int) bool { return false }); !bytes.Equal(got, want) {
		t.Fatalf("core after recover differs from the dirty data at byte %d", testutil.FirstDiff(got, want))
	}
	if !bytes.Equal(readFile(t, path), cacheBefore) {
		t.Fatal("recover wrote to the cache image")
	}
}

// TestRecoverDamagedEntrySector: the lines of a damaged entry sector are
// reported lost with where they are, the rest is written back, exit 4.
func TestRecoverDamagedEntrySector(t *testing.T) {
	path, _ := buildImage(t, false)
	flipByte(t, path, metadata.SuperblockArea+512+40) // entry sector 1: lines 49..97
	core := coreImage(t, imageCoreLen)
	r := offline(t, "recover", path, "--core", "3="+core)
	if r.code != exitLost {
		t.Fatalf("recover: exit %d, want %d; stderr %q\n%s", r.code, exitLost, r.stderr, r.stdout)
	}
	for _, want := range []string{
		"NOT RECOVERED: lines 49..97 (data at cache bytes ", ", entries at bytes 131584..132095): corrupt cache metadata: entry sector 1: checksum",
		"recovered 9 of 9 dirty lines",
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("recover output lacks %q:\n%s", want, r.stdout)
		}
	}
	want := wantRecovered(func(l int) bool { return l >= 49 && l <= 97 })
	if got := readFile(t, core); !bytes.Equal(got, want) {
		t.Fatalf("core after recover differs at byte %d", testutil.FirstDiff(got, want))
	}
}

// TestRecoverRefuses: missing or too small cores, bad --core values and a
// device without a cache are refused, and nothing is written.
func TestRecoverRefuses(t *testing.T) {
	path, _ := buildImage(t, false)
	small := coreImage(t, 150*imageLine) // holds core lines 100..119, not line 200
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{nil, 1, `core 3 (recorded as "core0", 33554432 bytes): 21 dirty lines (82944 bytes): no device for a core with dirty data`},
		{[]string{"--core", "3=" + small}, 1, "core 3: \"core.img\" is 614400 bytes, but its dirty data reaches byte 821248"},
		{[]string{"--core", "3"}, 1, `--core "3": want ID=CORE-DEVICE`},
		{[]string{"--core", "65535=x"}, 1, `--core "65535=x": want ID=CORE-DEVICE`},
		{[]string{"--core", "3=a", "--core", "3=b"}, 1, "core 3 is already given as a"},
		{[]string{"--line-size-kib", "8"}, 1, "the superblock records 4 KiB lines, not 8 KiB"},
	} {
		r := offline(t, append([]string{"recover", path}, c.args...)...)
		if r.code != c.code || !strings.Contains(r.stderr, c.want) {
			t.Errorf("recover %v: exit %d, stderr %q; want exit %d and %q", c.args, r.code, r.stderr, c.code, c.want)
		}
	}
	if !bytes.Equal(readFile(t, small), make([]byte, 150*imageLine)) {
		t.Error("a refused recover wrote to the core")
	}
	blank := coreImage(t, 4<<20)
	if r := offline(t, "recover", blank); r.code != exitNoMetadata || !strings.Contains(r.stderr, "no cache metadata on the device") {
		t.Errorf("recover of a blank device: exit %d, stderr %q", r.code, r.stderr)
	}
}
