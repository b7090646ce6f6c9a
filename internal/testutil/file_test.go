package testutil

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

func TestZeroRange(t *testing.T) {
	p := filepath.Join(t.TempDir(), "img")
	if err := os.WriteFile(p, bytes.Repeat([]byte{0xff}, 4096), 0o644); err != nil {
		t.Fatal(err)
	}
	ZeroRange(t, p, 512, 1024)
	got, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	want := bytes.Repeat([]byte{0xff}, 4096)
	clear(want[512:1536])
	if !bytes.Equal(got, want) {
		t.Fatalf("bytes differ from want at %d", FirstDiff(got, want))
	}
}
