package metadata_test

import (
	"bytes"
	"encoding/binary"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/uuid"

	"blockcache/internal/ocf/metadata"
)

// update rewrites testdata/*.golden from the current encoder. Use it only
// for a deliberate format change, together with a new Version.
var update = flag.Bool("update", false, "rewrite testdata/*.golden")

// sampleDevBytes is the cache device size of sampleSuperblock: 1 GiB.
const sampleDevBytes = 1 << 30

var (
	sampleCacheID = uuid.MustParse("0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0ff")
	sampleVolume1 = uuid.MustParse("11111111-2222-4333-8444-555555555555")
	sampleVolume2 = uuid.MustParse("aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee")
)

// sampleSuperblock is the superblock pinned by testdata/superblock-v2.golden:
// 4 KiB lines on a 1 GiB cache device, two named cores with identities.
// testdata/superblock-v1.golden pins its version 1 encoding, written before
// core records had identities.
func sampleSuperblock() *metadata.Superblock {
	s := &metadata.Superblock{
		Flags:     metadata.FlagClean,
		Seq:       0x0102030405060708,
		CacheID:   sampleCacheID,
		Geometry:  metadata.ComputeGeometry(sampleDevBytes, 4096),
		Mode:      1,
		Promotion: 2, Cleaning: 3, SeqCutoff: 4,
		Cores: []metadata.CoreRecord{
			{ID: 0, SizeBytes: 10 << 30, VolumeUUID: sampleVolume1, CoreName: "Nvme0n1", VolumeName: "cache0-Nvme0n1",
				Identity: "by-id:nvme-eui.0025388b71b3e2f1"},
			{ID: 7, SizeBytes: 1<<40 + 512, VolumeUUID: sampleVolume2, CoreName: "Malloc1", VolumeName: "vol",
				Identity: "file:259:3:1234567"},
		},
	}
	for i := range s.Params {
		s.Params[i] = uint32(i)*0x01010101 + 0x10
	}
	return s
}

// sampleEntries are the entries pinned by testdata/entries-*.golden for a
// line of spl sectors: a fully valid and dirty line, a partly valid one, a
// mapped empty one, then (by omission) unmapped slots.
func sampleEntries(spl int) []metadata.Entry {
	full := mask(spl)
	return []metadata.Entry{
		{Core: 0, CoreLine: 0x00ABCDEF, Valid: full, Dirty: full},
		{Core: 7, CoreLine: 1, Valid: [2]uint64{0b1011, 0}, Dirty: [2]uint64{0b0010, 0}},
		{Core: 0xFFFE, CoreLine: 0xFFFFFFFF},
		metadata.Unmapped,
	}
}

// mask is the mask with the first spl bits set.
func mask(spl int) [2]uint64 {
	var m [2]uint64
	for i := range spl {
		m[i/64] |= 1 << (i % 64)
	}
	return m
}

// dump renders b as offset-prefixed hex, 16 bytes a line.
func dump(b []byte) string {
	var sb strings.Builder
	for off := 0; off < len(b); off += 16 {
		fmt.Fprintf(&sb, "%04x ", off)
		for i, c := range b[off:min(off+16, len(b))] {
			if i == 8 {
				sb.WriteByte(' ')
			}
			fmt.Fprintf(&sb, " %02x", c)
		}
		sb.WriteByte('\n')
	}
	return sb.String()
}

// checkGolden compares b with testdata/name, or rewrites it under -update.
func checkGolden(t *testing.T, name string, b []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	got := dump(b)
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -run %s -update once to create it)", err, t.Name())
	}
	if got == string(want) {
		return
	}
	gl, wl := strings.Split(got, "\n"), strings.Split(string(want), "\n")
	for i := range max(len(gl), len(wl)) {
		var g, w string
		if i < len(gl) {
			g = gl[i]
		}
		if i < len(wl) {
			w = wl[i]
		}
		if g != w {
			t.Fatalf("%s: on-disk format changed (never change it; add a Version)\nfirst difference, line %d:\n got  %s\n want %s", path, i+1, g, w)
		}
	}
}

// undump parses what dump renders.
func undump(t *testing.T, name string) []byte {
	t.Helper()
	text, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	var b []byte
	for i, line := range strings.Split(strings.TrimSpace(string(text)), "\n") {
		fields := strings.Fields(line)
		if len(fields) < 2 || fields[0] != fmt.Sprintf("%04x", len(b)) {
			t.Fatalf("%s line %d: %q is not a dump line at offset %04x", name, i+1, line, len(b))
		}
		for _, f := range fields[1:] {
			var c byte
			if _, err := fmt.Sscanf(f, "%02x", &c); err != nil {
				t.Fatalf("%s line %d: %q: %v", name, i+1, f, err)
			}
			b = append(b, c)
		}
	}
	return b
}

func TestGoldenSuperblock(t *testing.T) {
	b, err := sampleSuperblock().Encode()
	if err != nil {
		t.Fatal(err)
	}
	checkGolden(t, "superblock-v2.golden", b)
	// The golden bytes decode to the sample: the pinned bytes are readable,
	// not just reproducible.
	s, err := metadata.DecodeSuperblock(b, sampleDevBytes)
	if err != nil {
		t.Fatal(err)
	}
	requireEqualSuperblock(t, s, sampleSuperblock())
}

// TestGoldenSuperblockV1 decodes the version 1 bytes pinned before core
// records had identities: caches written by older builds still load, their
// cores' identities unknown (empty).
func TestGoldenSuperblockV1(t *testing.T) {
	b := undump(t, "superblock-v1.golden")
	if v := binary.LittleEndian.Uint32(b[8:]); v != metadata.VersionV1 {
		t.Fatalf("superblock-v1.golden holds version %d", v)
	}
	s, err := metadata.DecodeSuperblock(b, sampleDevBytes)
	if err != nil {
		t.Fatal(err)
	}
	want := sampleSuperblock()
	for i := range want.Cores {
		want.Cores[i].Identity = ""
	}
	requireEqualSuperblock(t, s, want)
	// Re-encoding writes the current version, which decodes the same.
	b2, err := s.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if v := binary.LittleEndian.Uint32(b2[8:]); v != metadata.Version {
		t.Errorf("re-encoded as version %d, want %d", v, metadata.Version)
	}
	s2, err := metadata.DecodeSuperblock(b2, sampleDevBytes)
	if err != nil {
		t.Fatal(err)
	}
	requireEqualSuperblock(t, s2, want)
	// A version 1 record is read without identities: bytes where a
	// version 2 record has them are left over, which is corruption.
	v1 := append([]byte(nil), b2...)
	binary.LittleEndian.PutUint32(v1[8:], metadata.VersionV1)
	binary.LittleEndian.PutUint32(v1[12:], metadata.Checksum(v1[16:]))
	if _, err := metadata.DecodeSuperblock(v1, sampleDevBytes); !metadata.IsCorrupt(err) {
		t.Errorf("version 2 core records labelled version 1: Decode = %v, want a corruption error", err)
	}
}

func TestGoldenEntrySector(t *testing.T) {
	for _, spl := range []int{8, 128} {
		b := make([]byte, metadata.SectorBytes)
		metadata.EncodeSector(b, 3, sampleCacheID, spl, sampleEntries(spl))
		checkGolden(t, fmt.Sprintf("entries-%dk.golden", spl/2), b)
		out := make([]metadata.Entry, metadata.EntriesPerSector(spl))
		if err := metadata.DecodeSector(b, 3, sampleCacheID, spl, out); err != nil {
			t.Fatalf("%d sectors per line: %v", spl, err)
		}
		for i, e := range sampleEntries(spl) {
			if out[i] != e {
				t.Errorf("%d sectors per line: slot %d = %+v, want %+v", spl, i, out[i], e)
			}
		}
	}
}

// TestFormatConstants pins every on-disk constant and the sizes the package
// derives from them.
func TestFormatConstants(t *testing.T) {
	if metadata.Magic != "BCACHESB" || len(metadata.Magic) != 8 {
		t.Errorf("Magic = %q", metadata.Magic)
	}
	for name, c := range map[string]struct{ got, want int64 }{
		"Version":             {metadata.Version, 2},
		"VersionV1":           {metadata.VersionV1, 1},
		"SuperblockCopyBytes": {metadata.SuperblockCopyBytes, 64 << 10},
		"SuperblockArea":      {metadata.SuperblockArea, 128 << 10},
		"SectorBytes":         {metadata.SectorBytes, 512},
		"DataAlign":           {metadata.DataAlign, 4096},
		"NoCore":              {metadata.NoCore, 0xFFFF},
		"FlagClean":           {metadata.FlagClean, 1},
		"MaxNameBytes":        {metadata.MaxNameBytes, 255},
		"NumParams":           {metadata.NumParams, 16},
	} {
		if c.got != c.want {
			t.Errorf("%s = %d, want %d", name, c.got, c.want)
		}
	}
	for _, c := range []struct{ lineKiB, size, perSector int }{
		{4, 10, 49}, {8, 12, 41}, {16, 16, 31}, {32, 24, 20}, {64, 40, 12},
	} {
		spl := c.lineKiB * 1024 / metadata.SectorBytes
		if got := metadata.EntrySize(spl); got != c.size {
			t.Errorf("%d KiB lines: EntrySize = %d, want %d", c.lineKiB, got, c.size)
		}
		if got := metadata.EntriesPerSector(spl); got != c.perSector {
			t.Errorf("%d KiB lines: EntriesPerSector = %d, want %d", c.lineKiB, got, c.perSector)
		}
	}
}

// TestFormatOffsets pins where things are: the entry area after both
// superblock copies, the data area 4 KiB aligned after it, and the byte
// offsets of superblock and entry fields.
func TestFormatOffsets(t *testing.T) {
	g := metadata.ComputeGeometry(sampleDevBytes, 4096)
	want := metadata.Geometry{LineSize: 4096, NumLines: 261445, EntrySectors: 5336, DataOffset: 2863104}
	if g != want {
		t.Fatalf("1 GiB, 4 KiB lines: geometry %+v, want %+v", g, want)
	}
	if g.DataOffset%4096 != 0 || g.DataOffset+g.NumLines*g.LineSize != sampleDevBytes {
		t.Errorf("data area [%d, +%d lines) not aligned or not filling the device", g.DataOffset, g.NumLines)
	}
	if got := g.EntrySectorOffset(0); got != 128<<10 {
		t.Errorf("entry sector 0 at %d, want 128 KiB", got)
	}
	if got := g.EntrySectorOffset(5); got != 128<<10+5*512 {
		t.Errorf("entry sector 5 at %d", got)
	}
	if s, slot := g.SectorOfLine(49*7 + 3); s != 7 || slot != 3 {
		t.Errorf("SectorOfLine(346) = %d, %d; want 7, 3", s, slot)
	}

	b, err := sampleSuperblock().Encode()
	if err != nil {
		t.Fatal(err)
	}
	le := binary.LittleEndian
	s := sampleSuperblock()
	for _, f := range []struct {
		name      string
		got, want uint64
	}{
		{"version@8", uint64(le.Uint32(b[8:])), metadata.Version},
		{"crc@12", uint64(le.Uint32(b[12:])), uint64(metadata.Checksum(b[16:]))},
		{"length@16", uint64(le.Uint32(b[16:])), uint64(len(b))},
		{"flags@20", uint64(le.Uint32(b[20:])), metadata.FlagClean},
		{"seq@24", le.Uint64(b[24:]), s.Seq},
		{"lineSize@48", uint64(le.Uint32(b[48:])), 4096},
		{"mode@52", uint64(b[52]), 1},
		{"seqCutoff@55", uint64(b[55]), 4},
		{"lines@56", le.Uint64(b[56:]), uint64(g.NumLines)},
		{"entryArea@64", le.Uint64(b[64:]), metadata.SuperblockArea},
		{"dataOffset@72", le.Uint64(b[72:]), uint64(g.DataOffset)},
		{"param15@140", uint64(le.Uint32(b[140:])), uint64(s.Params[15])},
		{"cores@144", uint64(le.Uint16(b[144:])), 2},
		{"core0.size@152", le.Uint64(b[152:]), 10 << 30},
		{"core0.nameLen@188", uint64(b[188]), uint64(len("Nvme0n1"))},
	} {
		if f.got != f.want {
			t.Errorf("superblock %s = %#x, want %#x", f.name, f.got, f.want)
		}
	}
	if string(b[:8]) != metadata.Magic || !bytes.Equal(b[32:48], sampleCacheID[:]) || string(b[189:196]) != "Nvme0n1" {
		t.Error("superblock magic, cache UUID or first core name not where format.go draws them")
	}
	// Core 0's identity follows its volume name.
	if id := s.Cores[0].Identity; int(b[211]) != len(id) || string(b[212:212+len(id)]) != id {
		t.Errorf("core 0 identity not after its volume name: % x", b[211:212+len(id)])
	}
	if len(b) != 148+2*43+len("Nvme0n1cache0-Nvme0n1Malloc1vol")+len(s.Cores[0].Identity)+len(s.Cores[1].Identity) {
		t.Errorf("superblock length %d", len(b))
	}

	e := make([]byte, metadata.SectorBytes)
	metadata.EncodeSector(e, 3, sampleCacheID, 8, sampleEntries(8))
	if le.Uint32(e[0:]) != metadata.Checksum(e[4:]) || le.Uint32(e[4:]) != 3 || !bytes.Equal(e[8:16], sampleCacheID[:8]) {
		t.Error("entry sector header not crc@0, index@4, cache id@8")
	}
	// Slot 1 of 4 KiB lines: 16 + 10 bytes in.
	if le.Uint32(e[26:]) != 1 || le.Uint16(e[30:]) != 7 || e[34] != 0b1011 || e[35] != 0b0010 {
		t.Errorf("entry slot 1 bytes % x", e[26:36])
	}
	// Slot 48 is the last; it is unmapped, and the padding after it is zero.
	if le.Uint16(e[16+48*10+4:]) != metadata.NoCore || !bytes.Equal(e[16+49*10:], make([]byte, 512-16-490)) {
		t.Error("last slot not unmapped or padding not zero")
	}
}
