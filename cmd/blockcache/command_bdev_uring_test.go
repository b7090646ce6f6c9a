package main

import (
	"strings"
	"testing"
)

// TestBdevCreateFileUring: --engine uring makes a uring bdev, which
// delete-file deletes; it refuses --read-only, --buffered and an unknown
// engine before anything is created.
func TestBdevCreateFileUring(t *testing.T) {
	d := startDaemon(t)
	dir := t.TempDir()
	img := imageFile(t, dir, "uring.img", 4<<20)
	if got := d.ok(t, "bdev", "create-file", "U0", img, "--engine", "uring", "--block-size", "4096"); got != "U0\n" {
		t.Errorf("bdev create-file --engine uring printed %q", got)
	}
	checkRow(t, d.ok(t, "bdev", "list"), "U0", "URING bdev", "4 MiB", "4096", "no")
	if out := d.ok(t, "bdev", "list", "U0", "--json"); !strings.Contains(out, `"uring": {`) || !strings.Contains(out, `"filename": "`+img+`"`) {
		t.Errorf("bdev list U0 --json:\n%s", out)
	}
	img2 := imageFile(t, dir, "other.img", 4<<20)
	d.fails(t, []string{"bdev", "create-file", "U1", img2, "--engine", "uring", "--read-only"}, "--engine uring takes neither --read-only nor --buffered")
	d.fails(t, []string{"bdev", "create-file", "U1", img2, "--engine", "uring", "--buffered"}, "--engine uring takes neither --read-only nor --buffered")
	d.fails(t, []string{"bdev", "create-file", "U1", img2, "--engine", "spdk"}, `--engine "spdk": want aio or uring`)
	d.fails(t, []string{"bdev", "create-file", "U1", img, "--engine", "uring"}, "Device or resource busy")
	d.ok(t, "bdev", "delete-file", "U0")
	checkRowCount(t, d.ok(t, "bdev", "list"), 0)
	d.fails(t, []string{"bdev", "delete-file", "U0"}, "blockcache: bdev delete-file U0: No such device")
}
