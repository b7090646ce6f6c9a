package main

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"blockcache/internal/bdev/file"
)

// TestOfflineToolsRefuseHeldDevice holds a cache image as a daemon's bdev
// does: check and inspect exit 3 and say who holds it and what to do. Two
// offline tools may read the same image at once.
func TestOfflineToolsRefuseHeldDevice(t *testing.T) {
	path, _ := buildImage(t, true)
	held, err := file.Open("cache0_cache", path, file.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tool := range []string{"check", "inspect"} {
		r := offline(t, tool, path)
		want := fmt.Sprintf("blockcache: %s %s: open file device %q: %s is in use by", tool, path, "cache.img", path)
		if r.code != exitInUse || !strings.HasPrefix(r.stderr, want) {
			t.Fatalf("%s of a held image: exit %d, stderr %q; want exit %d and %q", tool, r.code, r.stderr, exitInUse, want)
		}
		for _, s := range []string{fmt.Sprintf("pid %d", os.Getpid()), "stop the daemon"} {
			if !strings.Contains(r.stderr, s) {
				t.Errorf("%s stderr %q does not contain %q", tool, r.stderr, s)
			}
		}
	}
	held.Close()

	reader, err := openCacheDevice(path)
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	if r := offline(t, "check", path); r.code != 0 {
		t.Fatalf("check beside another reader: exit %d, stderr %q", r.code, r.stderr)
	}
}
