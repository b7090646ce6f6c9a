package main

import (
	"encoding/json"
	"testing"
)

func TestBdevList(t *testing.T) {
	d := startDaemon(t)
	d.malloc(t, "M0", 8192, 512) // 4 MiB
	d.malloc(t, "M1", 384, 4096) // 1.5 MiB

	out := d.ok(t, "bdev", "list")
	if h := table(out)[0]; len(h) != 5 || h[0] != "NAME" || h[2] != "SIZE" || h[4] != "CLAIMED" {
		t.Errorf("header %q", h)
	}
	checkRowCount(t, out, 2)
	checkRow(t, out, "M0", "Malloc disk", "4 MiB", "512", "no")
	checkRow(t, out, "M1", "Malloc disk", "1.5 MiB", "4096", "no")

	out = d.ok(t, "bdev", "list", "M1")
	checkRowCount(t, out, 1)
	checkRow(t, out, "M1", "Malloc disk", "1.5 MiB", "4096", "no")

	var bdevs []struct {
		Name      string `json:"name"`
		NumBlocks uint64 `json:"num_blocks"`
		BlockSize uint64 `json:"block_size"`
		UUID      string `json:"uuid"`
	}
	if err := json.Unmarshal([]byte(d.ok(t, "bdev", "list", "--json")), &bdevs); err != nil {
		t.Fatal(err)
	}
	if len(bdevs) != 2 || bdevs[0].Name != "M0" || bdevs[0].NumBlocks != 8192 || bdevs[1].BlockSize != 4096 || bdevs[1].UUID == "" {
		t.Errorf("bdev list --json: %+v", bdevs)
	}

	// By alias (the UUID).
	checkRow(t, d.ok(t, "bdev", "list", bdevs[1].UUID), "M1", "Malloc disk", "1.5 MiB", "4096", "no")

	d.fails(t, []string{"bdev", "list", "M9"}, "blockcache: bdev list M9: No such device")
	d.fails(t, []string{"bdev", "frob"}, `unknown command "frob" for "blockcache bdev"`)
}
