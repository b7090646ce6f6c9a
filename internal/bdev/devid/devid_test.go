package devid_test

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"blockcache/internal/bdev/devid"
)

// fakeTree builds a /dev/disk/by-id and /sys/dev/block look-alike: disk
// sda (8:0) with partition sda1 (8:1), a disk vdb (252:16) with only a
// serial, a dm device (253:0) and a device with no id at all (7:3).
func fakeTree(t *testing.T) devid.Resolver {
	t.Helper()
	root := t.TempDir()
	byID := filepath.Join(root, "dev/disk/by-id")
	sysBlock := filepath.Join(root, "sys/dev/block")
	devices := filepath.Join(root, "sys/devices")
	for _, d := range []string{byID, sysBlock} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write := func(path, content string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	link := func(target, name string) {
		t.Helper()
		if err := os.Symlink(target, name); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(devices, "pci/block/sda/device/wwid"), "naa.5000c500a1b2c3d4\n")
	write(filepath.Join(devices, "pci/block/sda/sda1/partition"), "1\n")
	write(filepath.Join(devices, "virtio/block/vdb/serial"), "  VDB-SERIAL-7 \n")
	write(filepath.Join(devices, "virtual/block/dm-0/dm/uuid"), "LVM-abcdef\n")
	write(filepath.Join(devices, "virtual/block/loop3/size"), "0\n")
	link(filepath.Join(devices, "pci/block/sda"), filepath.Join(sysBlock, "8:0"))
	link(filepath.Join(devices, "pci/block/sda/sda1"), filepath.Join(sysBlock, "8:1"))
	link(filepath.Join(devices, "virtio/block/vdb"), filepath.Join(sysBlock, "252:16"))
	link(filepath.Join(devices, "virtual/block/dm-0"), filepath.Join(sysBlock, "253:0"))
	link(filepath.Join(devices, "virtual/block/loop3"), filepath.Join(sysBlock, "7:3"))
	// sda has two by-id links; the first in sorted order names it.
	link("../../sda", filepath.Join(byID, "wwn-0x5000c500a1b2c3d4"))
	link("../../sda", filepath.Join(byID, "ata-Disk_SERIAL1"))
	link("../../sda1", filepath.Join(byID, "ata-Disk_SERIAL1-part1"))
	return devid.Resolver{ByIDDir: byID, SysDir: sysBlock}
}

func TestBlockIdentity(t *testing.T) {
	r := fakeTree(t)
	for _, c := range []struct {
		major, minor uint32
		want         string
	}{
		{8, 0, "by-id:ata-Disk_SERIAL1"},
		{8, 1, "by-id:ata-Disk_SERIAL1-part1"},
		{252, 16, "serial:VDB-SERIAL-7"},
		{253, 0, "dm-uuid:LVM-abcdef"},
		{7, 3, ""},
		{9, 9, ""}, // no such device
	} {
		if got := r.Block(unix.Mkdev(c.major, c.minor)); got != c.want {
			t.Errorf("%d:%d: identity %q, want %q", c.major, c.minor, got, c.want)
		}
	}
	// Without by-id links, sysfs names the disk, and a partition by its
	// disk and number.
	r.ByIDDir = filepath.Join(t.TempDir(), "none")
	if got, want := r.Block(unix.Mkdev(8, 0)), "wwid:naa.5000c500a1b2c3d4"; got != want {
		t.Errorf("8:0 without by-id: %q, want %q", got, want)
	}
	if got, want := r.Block(unix.Mkdev(8, 1)), "wwid:naa.5000c500a1b2c3d4:part1"; got != want {
		t.Errorf("8:1 without by-id: %q, want %q", got, want)
	}
}

func TestFileIdentity(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	for _, p := range []string{a, b} {
		if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	stat := func(p string) *unix.Stat_t {
		var st unix.Stat_t
		if err := unix.Stat(p, &st); err != nil {
			t.Fatal(err)
		}
		return &st
	}
	ida, idb := devid.FromStat(stat(a)), devid.FromStat(stat(b))
	st := stat(a)
	if want := devid.File(st.Dev, st.Ino); ida != want || ida == "" {
		t.Fatalf("identity of a: %q, want %q", ida, want)
	}
	if ida == idb {
		t.Fatalf("two files share identity %q", ida)
	}
	// A rename or a second link is the same file; a copy is not.
	c := filepath.Join(dir, "c")
	if err := os.Rename(a, c); err != nil {
		t.Fatal(err)
	}
	if got := devid.FromStat(stat(c)); got != ida {
		t.Errorf("renamed file: %q, want %q", got, ida)
	}
	if got := devid.FromStat(stat(dir)); got != "" {
		t.Errorf("a directory has identity %q", got)
	}
}
