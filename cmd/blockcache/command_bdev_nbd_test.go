package main

import (
	"bytes"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestBdevCreateDeleteNBD(t *testing.T) {
	if _, err := exec.LookPath("nbdkit"); err != nil {
		t.Fatalf("nbdkit is needed (make deps installs it): %v", err)
	}
	sock := filepath.Join(t.TempDir(), "nbdkit.sock")
	srv := exec.Command("nbdkit", "-f", "-U", sock, "memory", "4M")
	var out bytes.Buffer
	srv.Stderr = &out
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Process.Kill(); srv.Wait() })
	d := startDaemon(t)
	uri := "nbd+unix:///?socket=" + sock
	var got string
	for end := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		r := d.cli(t, "bdev", "create-nbd", "N0", uri, "--io-timeout-sec", "5", "--connections", "2")
		if r.code == 0 {
			got = r.stdout
			break
		}
		if time.Now().After(end) {
			t.Fatalf("bdev create-nbd: exit %d: %s\nnbdkit: %s", r.code, r.stderr, out.String())
		}
	}
	if got != "N0\n" {
		t.Errorf("bdev create-nbd printed %q", got)
	}
	checkRow(t, d.ok(t, "bdev", "list"), "N0", "NBD disk", "4 MiB", "512", "no")
	js := d.ok(t, "bdev", "list", "N0", "--json")
	for _, want := range []string{`"state": "connected"`, `"io_timeout_sec": 5`, `"connections": 2`, `"fast_io_fail_timeout_sec": 30`} {
		if !strings.Contains(js, want) {
			t.Errorf("bdev list N0 --json lacks %s:\n%s", want, js)
		}
	}
	d.fails(t, []string{"bdev", "create-nbd", "N1", "nbds://h/x"}, "blockcache: bdev create-nbd N1: ")
	d.fails(t, []string{"bdev", "create-nbd", "N1", uri, "--reconnect-delay-sec", "0"}, "reconnect_delay_sec can't be 0")
	d.fails(t, []string{"bdev", "create-nbd", "N1"}, "accepts 2 arg(s)")
	d.ok(t, "bdev", "delete-nbd", "N0")
	checkRowCount(t, d.ok(t, "bdev", "list"), 0)
	d.fails(t, []string{"bdev", "delete-nbd", "N0"}, "blockcache: bdev delete-nbd N0: No such device")
}
