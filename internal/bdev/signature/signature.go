// Package signature recognises what else a device may hold before a cache
// takes it over: the file system, swap, volume manager, RAID and partition
// table signatures that wipefs(8) knows best. Detection is a pure function
// of the device's first bytes; DetectDevice reads them.
//
// A signature is a hint, not proof: a magic number can occur by chance, so
// each check also tests a field or two that a real instance has (an ext
// block size in range, an MBR's boot flags), as blkid does.
package signature

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strings"

	"blockcache/internal/bdev"
)

// ProbeBytes is how far into a device the signatures reach: btrfs keeps its
// magic at 64 KiB + 64.
const ProbeBytes = 68 << 10

// Signature is a format found on a device.
type Signature struct {
	// Type is the name wipefs and blkid give the format: ext2, ext3, ext4,
	// xfs, btrfs, swap, LVM2_member, linux_raid_member, dos (an MBR
	// partition table), PMBR (the protective MBR of a GPT) or gpt.
	Type string
	// Kind says what the format is, e.g. "file system".
	Kind string
	// Offset is the byte offset of the magic on the device.
	Offset int64
	// Label is the file system or array label, if the format has one.
	Label string
}

// String describes the signature, e.g. `ext4 file system "data" (magic at
// byte 1080)`.
func (s Signature) String() string {
	label := ""
	if s.Label != "" {
		label = fmt.Sprintf(" %q", s.Label)
	}
	return fmt.Sprintf("%s %s%s (magic at byte %d)", s.Type, s.Kind, label, s.Offset)
}

// Detect returns the signatures found in b, the first bytes of a device
// (ProbeBytes of them; a shorter b is checked as far as it reaches), in
// the order of the checks below.
func Detect(b []byte) []Signature {
	var found []Signature
	for _, check := range []func([]byte) (Signature, bool){ext, xfs, btrfs, swap, lvm2, mdraid, gpt, mbr} {
		if s, ok := check(b); ok {
			found = append(found, s)
		}
	}
	return found
}

// DetectDevice reads the first ProbeBytes of dev (all of it if it is
// smaller, in whole blocks) and returns what Detect finds there.
func DetectDevice(dev bdev.Device) ([]Signature, error) {
	info := dev.Info()
	n := min(info.SizeBytes(), ProbeBytes)
	n -= n % int64(info.BlockSize)
	b := make([]byte, n)
	if err := dev.ReadAt(b, 0); err != nil {
		return nil, fmt.Errorf("probe %q for signatures: %w", info.Name, err)
	}
	return Detect(b), nil
}

// Describe joins signatures for a message: "ext4 file system (magic at
// byte 1080), dos partition table (magic at byte 510)".
func Describe(sigs []Signature) string {
	parts := make([]string, len(sigs))
	for i, s := range sigs {
		parts[i] = s.String()
	}
	return strings.Join(parts, ", ")
}

// at returns b[off:off+n], or nil when b is too short.
func at(b []byte, off, n int) []byte {
	if off+n > len(b) {
		return nil
	}
	return b[off : off+n]
}

// label returns a NUL-padded label field as a string.
func label(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return strings.TrimSpace(string(b))
}

var le = binary.LittleEndian

// ext2/3/4: the superblock is at 1024; s_magic 0xEF53 at +56.
const (
	extSuper         = 1024
	extMagicOffset   = extSuper + 56
	extCompatJournal = 0x0004 // s_feature_compat: has_journal
	extIncompatExt4  = 0x02C0 // s_feature_incompat: extents, 64bit, flex_bg
	extRoCompatExt4  = 0x0008 // s_feature_ro_compat: huge_file
	extMaxLogBlock   = 6      // s_log_block_size of 64 KiB blocks
	extMaxRevLevel   = 1
)

func ext(b []byte) (Signature, bool) {
	sb := at(b, extSuper, 1024)
	if sb == nil || le.Uint16(sb[56:]) != 0xEF53 {
		return Signature{}, false
	}
	if le.Uint32(sb[24:]) > extMaxLogBlock || le.Uint32(sb[76:]) > extMaxRevLevel || le.Uint32(sb[0:]) == 0 {
		return Signature{}, false
	}
	typ := "ext2"
	switch {
	case le.Uint32(sb[96:])&extIncompatExt4 != 0 || le.Uint32(sb[100:])&extRoCompatExt4 != 0:
		typ = "ext4"
	case le.Uint32(sb[92:])&extCompatJournal != 0:
		typ = "ext3"
	}
	return Signature{Type: typ, Kind: "file system", Offset: extMagicOffset, Label: label(sb[120:136])}, true
}

// xfs: "XFSB" at 0, then the block size (big-endian), a power of two.
func xfs(b []byte) (Signature, bool) {
	sb := at(b, 0, 120)
	if sb == nil || string(sb[0:4]) != "XFSB" {
		return Signature{}, false
	}
	if bs := binary.BigEndian.Uint32(sb[4:]); bs < 512 || bs > 65536 || bs&(bs-1) != 0 {
		return Signature{}, false
	}
	return Signature{Type: "xfs", Kind: "file system", Offset: 0, Label: label(sb[108:120])}, true
}

// btrfs: "_BHRfS_M" at 64 KiB + 64; the label at 64 KiB + 299.
const btrfsSuper = 64 << 10

func btrfs(b []byte) (Signature, bool) {
	if m := at(b, btrfsSuper+64, 8); m == nil || string(m) != "_BHRfS_M" {
		return Signature{}, false
	}
	var l string
	if lb := at(b, btrfsSuper+299, 256); lb != nil {
		l = label(lb)
	}
	return Signature{Type: "btrfs", Kind: "file system", Offset: btrfsSuper + 64, Label: l}, true
}

// swap: "SWAPSPACE2" (or the old "SWAP-SPACE") ends the first page.
func swap(b []byte) (Signature, bool) {
	for _, page := range []int{4096, 8192, 16384, 65536} {
		m := at(b, page-10, 10)
		if m != nil && (string(m) == "SWAPSPACE2" || string(m) == "SWAP-SPACE") {
			return Signature{Type: "swap", Kind: "area", Offset: int64(page - 10)}, true
		}
	}
	return Signature{}, false
}

// lvm2: "LABELONE" in one of the first four sectors, "LVM2 001" at +24.
func lvm2(b []byte) (Signature, bool) {
	for s := range 4 {
		l := at(b, s*512, 32)
		if l != nil && string(l[0:8]) == "LABELONE" && string(l[24:32]) == "LVM2 001" {
			return Signature{Type: "LVM2_member", Kind: "physical volume", Offset: int64(s * 512)}, true
		}
	}
	return Signature{}, false
}

// mdraid: a version 1.1 (at 0) or 1.2 (at 4 KiB) superblock, magic
// 0xa92b4efc and major version 1; the array name at +32.
func mdraid(b []byte) (Signature, bool) {
	for _, off := range []int{0, 4096} {
		sb := at(b, off, 64)
		if sb != nil && le.Uint32(sb[0:]) == 0xa92b4efc && le.Uint32(sb[4:]) == 1 {
			return Signature{Type: "linux_raid_member", Kind: "RAID member", Offset: int64(off), Label: label(sb[32:64])}, true
		}
	}
	return Signature{}, false
}

// gpt: "EFI PART" in the second logical block, of 512 bytes or 4 KiB.
func gpt(b []byte) (Signature, bool) {
	for _, off := range []int{512, 4096} {
		if m := at(b, off, 8); m != nil && string(m) == "EFI PART" {
			return Signature{Type: "gpt", Kind: "partition table", Offset: int64(off)}, true
		}
	}
	return Signature{}, false
}

// mbr: 0x55 0xAA at 510 and a partition table at 446 whose four entries
// have valid boot flags (0x00 or 0x80) and at least one a non-zero type:
// "dos", or "PMBR" for the protective MBR (type 0xEE) in front of a GPT.
func mbr(b []byte) (Signature, bool) {
	s := at(b, 0, 512)
	if s == nil || s[510] != 0x55 || s[511] != 0xAA {
		return Signature{}, false
	}
	used, protective := false, false
	for i := range 4 {
		e := s[446+16*i : 446+16*(i+1)]
		if e[0] != 0 && e[0] != 0x80 {
			return Signature{}, false
		}
		used = used || e[4] != 0
		protective = protective || e[4] == 0xEE
	}
	switch {
	case protective:
		return Signature{Type: "PMBR", Kind: "partition table", Offset: 510}, true
	case used:
		return Signature{Type: "dos", Kind: "partition table", Offset: 510}, true
	}
	return Signature{}, false
}
