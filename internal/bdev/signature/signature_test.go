package signature_test

import (
	"encoding/binary"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/google/uuid"

	"blockcache/internal/bdev/malloc"
	"blockcache/internal/bdev/signature"
)

// image returns a zeroed device start of ProbeBytes with edit applied.
func image(edit func(b []byte)) []byte {
	b := make([]byte, signature.ProbeBytes)
	edit(b)
	return b
}

var le = binary.LittleEndian

func TestDetectEach(t *testing.T) {
	for _, c := range []struct {
		name       string
		edit       func(b []byte)
		typ, label string
		offset     int64
	}{
		{"ext2", func(b []byte) {
			le.PutUint32(b[1024:], 65536) // inodes
			le.PutUint32(b[1024+24:], 2)  // 4 KiB blocks
			le.PutUint16(b[1080:], 0xEF53)
			le.PutUint32(b[1024+76:], 1)
			copy(b[1024+120:], "old")
		}, "ext2", "old", 1080},
		{"ext3", func(b []byte) {
			le.PutUint32(b[1024:], 65536)
			le.PutUint16(b[1080:], 0xEF53)
			le.PutUint32(b[1024+92:], 0x0004) // has_journal
		}, "ext3", "", 1080},
		{"ext4", func(b []byte) {
			le.PutUint32(b[1024:], 65536)
			le.PutUint16(b[1080:], 0xEF53)
			le.PutUint32(b[1024+92:], 0x0004)
			le.PutUint32(b[1024+96:], 0x0040) // extents
			copy(b[1024+120:], "data")
		}, "ext4", "data", 1080},
		{"xfs", func(b []byte) {
			copy(b, "XFSB")
			binary.BigEndian.PutUint32(b[4:], 4096)
			copy(b[108:], "scratch")
		}, "xfs", "scratch", 0},
		{"btrfs", func(b []byte) {
			copy(b[65536+64:], "_BHRfS_M")
			copy(b[65536+299:], "pool")
		}, "btrfs", "pool", 65600},
		{"swap 4k", func(b []byte) { copy(b[4086:], "SWAPSPACE2") }, "swap", "", 4086},
		{"swap old", func(b []byte) { copy(b[4086:], "SWAP-SPACE") }, "swap", "", 4086},
		{"swap 64k pages", func(b []byte) { copy(b[65526:], "SWAPSPACE2") }, "swap", "", 65526},
		{"lvm2 sector 1", func(b []byte) {
			copy(b[512:], "LABELONE")
			copy(b[512+24:], "LVM2 001")
		}, "LVM2_member", "", 512},
		{"md 1.2", func(b []byte) {
			le.PutUint32(b[4096:], 0xa92b4efc)
			le.PutUint32(b[4100:], 1)
			copy(b[4096+32:], "host:md0")
		}, "linux_raid_member", "host:md0", 4096},
		{"gpt 512", func(b []byte) { copy(b[512:], "EFI PART") }, "gpt", "", 512},
		{"gpt 4k", func(b []byte) { copy(b[4096:], "EFI PART") }, "gpt", "", 4096},
		{"mbr", func(b []byte) {
			b[446], b[446+4] = 0x80, 0x83 // bootable Linux partition
			b[510], b[511] = 0x55, 0xAA
		}, "dos", "", 510},
		{"protective mbr", func(b []byte) {
			b[446+4] = 0xEE
			b[510], b[511] = 0x55, 0xAA
		}, "PMBR", "", 510},
	} {
		got := signature.Detect(image(c.edit))
		if len(got) != 1 || got[0].Type != c.typ || got[0].Label != c.label || got[0].Offset != c.offset {
			t.Errorf("%s: Detect = %+v, want one %s labelled %q at %d", c.name, got, c.typ, c.label, c.offset)
		}
	}
}

// TestDetectNothing: blank devices, random data and near misses carry no
// signature.
func TestDetectNothing(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	random := make([]byte, signature.ProbeBytes)
	for i := range random {
		random[i] = byte(r.Uint32())
	}
	for name, b := range map[string][]byte{
		"zeroes": make([]byte, signature.ProbeBytes),
		"random": random,
		"short":  make([]byte, 100),
		"empty":  nil,
		"ext magic, 1 MiB blocks": image(func(b []byte) {
			le.PutUint32(b[1024:], 65536)
			le.PutUint16(b[1080:], 0xEF53)
			le.PutUint32(b[1024+24:], 10)
		}),
		"ext magic, no inodes": image(func(b []byte) { le.PutUint16(b[1080:], 0xEF53) }),
		"XFSB, odd block size": image(func(b []byte) {
			copy(b, "XFSB")
			binary.BigEndian.PutUint32(b[4:], 3000)
		}),
		"LABELONE without LVM2": image(func(b []byte) { copy(b[512:], "LABELONE") }),
		"LABELONE in sector 4": image(func(b []byte) {
			copy(b[2048:], "LABELONE")
			copy(b[2048+24:], "LVM2 001")
		}),
		"55AA, empty table": image(func(b []byte) { b[510], b[511] = 0x55, 0xAA }),
		"55AA, boot code over the table": image(func(b []byte) {
			b[446], b[446+4] = 0x31, 0x83
			b[510], b[511] = 0x55, 0xAA
		}),
		"md magic, version 0": image(func(b []byte) { le.PutUint32(b[4096:], 0xa92b4efc) }),
		"btrfs magic cut off": image(func(b []byte) { copy(b[65536+64:], "_BHRfS_M") })[:65536+66],
	} {
		if got := signature.Detect(b); len(got) != 0 {
			t.Errorf("%s: Detect = %+v, want nothing", name, got)
		}
	}
}

// TestDetectMkfs runs the real tools on image files: what mkfs.ext4 and
// mkswap write is recognised, and wipefs(8) agrees that a blank file holds
// nothing.
func TestDetectMkfs(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		tool string
		args []string
		typ  string
	}{
		{"mkfs.ext4", []string{"-q", "-F", "-L", "bcsig"}, "ext4"},
		{"mkswap", []string{"-L", "bcsig"}, "swap"},
	} {
		path, err := exec.LookPath(c.tool)
		if err != nil {
			path = filepath.Join("/usr/sbin", c.tool)
		}
		img := filepath.Join(dir, c.typ+".img")
		if err := os.WriteFile(img, make([]byte, 8<<20), 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command(path, append(c.args, img)...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", c.tool, err, out)
		}
		b, err := os.ReadFile(img)
		if err != nil {
			t.Fatal(err)
		}
		got := signature.Detect(b[:signature.ProbeBytes])
		if len(got) == 0 || got[0].Type != c.typ {
			t.Errorf("%s image: Detect = %+v, want %s", c.tool, got, c.typ)
		}
	}
}

func TestDetectDevice(t *testing.T) {
	d, err := malloc.New("M", uuid.Nil, 512, 256) // 128 KiB
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 512)
	copy(buf, "EFI PART")
	if err := d.WriteAt(buf, 512, false); err != nil {
		t.Fatal(err)
	}
	got, err := signature.DetectDevice(d)
	if err != nil || len(got) != 1 || got[0].Type != "gpt" {
		t.Fatalf("DetectDevice = %+v, %v; want gpt", got, err)
	}
	if s := signature.Describe(got); s != "gpt partition table (magic at byte 512)" {
		t.Errorf("Describe = %q", s)
	}
	// A device smaller than ProbeBytes is read as far as it goes.
	small, err := malloc.New("S", uuid.Nil, 512, 4)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := signature.DetectDevice(small); err != nil || len(got) != 0 {
		t.Errorf("2 KiB blank device: %+v, %v", got, err)
	}
}
