package main

import (
	"encoding/json"
	"regexp"
	"testing"

	"blockcache/internal/nbd/nbdclient"
)

func TestExportCommands(t *testing.T) {
	d := startDaemon(t)
	d.malloc(t, "M0", 8192, 512)

	uri := d.ok(t, "export", "start", "M0")
	if want := "nbd://" + d.nbdAddr + "/M0\n"; uri != want {
		t.Fatalf("export start printed %q, want %q", uri, want)
	}
	uri = uri[:len(uri)-1]
	out := d.ok(t, "export", "list")
	checkRowCount(t, out, 1)
	checkRow(t, out, "M0", uri, "started")
	var disks []nbdDisk
	if err := json.Unmarshal([]byte(d.ok(t, "export", "list", "--json")), &disks); err != nil || len(disks) != 1 || disks[0] != (nbdDisk{uri, "M0"}) {
		t.Errorf("export list --json: %+v, %v", disks, err)
	}
	// The export is real.
	c, err := nbdclient.Dial("tcp", d.nbdAddr, nbdclient.Options{Export: "M0"})
	if err != nil {
		t.Fatalf("NBD client cannot reach the export: %v", err)
	}
	c.Disconnect()
	d.fails(t, []string{"export", "start", "M0"}, "export start M0:")
	d.fails(t, []string{"export", "start", "M9"}, "export start M9: No such device")

	// Stop by bdev name.
	d.ok(t, "export", "stop", "M0")
	checkRowCount(t, d.ok(t, "export", "list"), 0)
	// Stop by URI.
	d.ok(t, "export", "start", "M0")
	d.ok(t, "export", "stop", uri)
	checkRowCount(t, d.ok(t, "export", "list"), 0)

	d.fails(t, []string{"export", "stop", "M0"}, "export stop M0: no export has that URI or bdev name")
	if !regexp.MustCompile(`^BDEV\s+URI\s+STATE\n$`).MatchString(d.ok(t, "export", "list")) {
		t.Error("export list of nothing is not just the header")
	}
}
