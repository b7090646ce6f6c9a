package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/google/uuid"

	"blockcache/internal/bdev"
	"blockcache/internal/bdev/file"
	"blockcache/internal/bdev/malloc"
	"blockcache/internal/ocf"
	"blockcache/internal/ocf/metadata"
)

// The test image: a cache of imageLines 4 KiB lines over a 32 MiB core
// volume. Written in wt: core lines 0..cleanLines-1 (clean); then in wb:
// core lines 100..100+dirtyFull-1 whole (dirty), and sectors 2..3 of core
// line 200 (dirty, partial). Lines are allocated from cache line 0 up, so
// the 61 mapped lines fill entry sector 0 (49 entries) and part of sector 1.
const (
	imageLines   = 256
	imageLine    = 4096
	cleanLines   = 40
	dirtyFull    = 20
	partialCore  = 200
	mappedLines  = cleanLines + dirtyFull + 1
	dirtyLines   = dirtyFull + 1
	imageCoreLen = 32 << 20
)

var imageVolUUID = uuid.MustParse("6f1c2a4e-0d3b-4c5a-9e8f-112233445566")

// buildImage makes a cache image file as described above. With clean the
// cache is stopped (clean shutdown); without, the volume is flushed (so its
// metadata is durable) and the file closed as a crash would leave it.
// It returns the path and the cache's id.
func buildImage(t *testing.T, clean bool) (string, uuid.UUID) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "cache.img")
	dev, err := file.Open("cache", path, file.Options{Create: true, Size: ocf.DeviceBytesFor(imageLines, imageLine)})
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	core, err := malloc.New("core0", uuid.Nil, 512, imageCoreLen/512)
	if err != nil {
		t.Fatal(err)
	}
	// No sequential cutoff: the cache is small enough to count as full,
	// and the default cutoff would send the consecutive writes around it.
	c, err := ocf.New(dev, ocf.Config{Mode: ocf.ModeWT, LineSize: imageLine, SeqCutoff: ocf.CutoffNever{}})
	if err != nil {
		t.Fatal(err)
	}
	co, err := c.AddCore(ocf.CoreConfig{ID: 3, Device: core, Volume: bdev.Info{Name: "vol0", UUID: imageVolUUID}})
	if err != nil {
		t.Fatal(err)
	}
	write := func(coreLine int, p []byte, sector int) {
		t.Helper()
		if err := co.WriteAt(p, int64(coreLine)*imageLine+int64(sector)*512, false); err != nil {
			t.Fatal(err)
		}
	}
	for i := range cleanLines {
		write(i, bytes.Repeat([]byte{byte(i)}, imageLine), 0)
	}
	if err := c.SetMode(ocf.ModeWB, false); err != nil {
		t.Fatal(err)
	}
	for i := range dirtyFull {
		write(100+i, bytes.Repeat([]byte{0xd0 + byte(i)}, imageLine), 0)
	}
	write(partialCore, bytes.Repeat([]byte{0xee}, 1024), 2)
	if clean {
		if err := c.RemoveCore(co, false); err != nil {
			t.Fatal(err)
		}
		if err := c.Stop(); err != nil {
			t.Fatal(err)
		}
	} else if err := co.Flush(); err != nil {
		t.Fatal(err)
	}
	return path, c.ID()
}

// offline runs an offline command (no daemon).
func offline(t *testing.T, args ...string) result {
	t.Helper()
	return runCLI(t, "", args...)
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// flipByte inverts one byte of the file at off.
func flipByte(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0xff
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// summary parses check's "  key  value" lines.
func summary(t *testing.T, out string) map[string]string {
	t.Helper()
	m := map[string]string{}
	for _, line := range strings.Split(out, "\n")[1:] {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), "  "); ok {
			m[k] = strings.TrimSpace(v)
		}
	}
	return m
}

func checkSummary(t *testing.T, out string, want map[string]string) {
	t.Helper()
	got := summary(t, out)
	for k, v := range want {
		if got[k] != v {
			t.Errorf("check summary %q = %q, want %q\n%s", k, got[k], v, out)
		}
	}
}

func TestCheckCleanImage(t *testing.T) {
	path, id := buildImage(t, true)
	before := readFile(t, path)
	r := offline(t, "check", path)
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("check: exit %d, stderr %q, stdout\n%s", r.code, r.stderr, r.stdout)
	}
	if !strings.HasPrefix(r.stdout, path+": cache metadata OK\n") {
		t.Errorf("check: first line of\n%s", r.stdout)
	}
	checkSummary(t, r.stdout, map[string]string{
		"cache id":            id.String(),
		"shutdown":            "clean",
		"mode":                "wb",
		"line size":           "4 KiB",
		"cache lines":         fmt.Sprint(imageLines),
		"lines":               fmt.Sprint(mappedLines),
		"dirty lines":         fmt.Sprint(dirtyLines),
		"dropped clean lines": "0",
		"cores":               "1",
		"core 3":              `"core0" (32 MiB), volume "vol0" ` + imageVolUUID.String(),
	})
	if strings.Contains(r.stdout, "warning") {
		t.Errorf("check of a sound image warns:\n%s", r.stdout)
	}
	if !bytes.Equal(before, readFile(t, path)) {
		t.Error("check changed the image")
	}
}

func TestCheckUncleanImage(t *testing.T) {
	path, _ := buildImage(t, false)
	r := offline(t, "check", path)
	if r.code != 0 {
		t.Fatalf("check: exit %d, stderr %q", r.code, r.stderr)
	}
	// Only the dirty lines survive an unclean stop; the clean ones are
	// dropped.
	checkSummary(t, r.stdout, map[string]string{
		"shutdown":            "not clean (the cache was not stopped: only its dirty data is kept)",
		"lines":               fmt.Sprint(dirtyLines),
		"dirty lines":         fmt.Sprint(dirtyLines),
		"dropped clean lines": fmt.Sprint(cleanLines),
	})
}

func TestCheckDamagedEntrySector(t *testing.T) {
	path, _ := buildImage(t, true)
	flipByte(t, path, metadata.SuperblockArea+512+40) // entry sector 1, inside its first entry
	r := offline(t, "check", path)
	if r.code != 1 || r.stdout != "" {
		t.Fatalf("check of a damaged image: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	for _, want := range []string{"blockcache: check " + path + ": damaged:", "entry sector 1 (byte offset 131584, lines 49..97)", "checksum"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("check stderr %q does not contain %q", r.stderr, want)
		}
	}
}

func TestCheckDamagedSuperblockCopy(t *testing.T) {
	path, _ := buildImage(t, true)
	// The clean stop wrote one copy; damage the other, older one: the
	// check passes on the current copy and warns.
	sb, err := func() (*metadata.Superblock, error) {
		dev, err := openCacheDevice(path)
		if err != nil {
			return nil, err
		}
		defer dev.Close()
		return ocf.Probe(dev)
	}()
	if err != nil {
		t.Fatal(err)
	}
	older := int64(1-sb.Seq%2) * metadata.SuperblockCopyBytes
	flipByte(t, path, older+20) // the flags, under the checksum
	r := offline(t, "check", path)
	if r.code != 0 {
		t.Fatalf("check: exit %d, stderr %q", r.code, r.stderr)
	}
	olderName := superblockCopy(sb.Seq + 1)
	wantWarn := "warning: superblock copy " + olderName + ": corrupt cache metadata: superblock checksum"
	if !strings.Contains(r.stdout, wantWarn) {
		t.Errorf("check stdout does not warn %q:\n%s", wantWarn, r.stdout)
	}
	checkSummary(t, r.stdout, map[string]string{
		"superblock": fmt.Sprintf("copy %s, sequence %d", superblockCopy(sb.Seq), sb.Seq),
		"lines":      fmt.Sprint(mappedLines),
	})

	// Both copies damaged: nothing to load.
	flipByte(t, path, int64(sb.Seq%2)*metadata.SuperblockCopyBytes+20)
	r = offline(t, "check", path)
	if r.code != 1 || !strings.Contains(r.stderr, "superblock copy A: corrupt cache metadata: superblock checksum") {
		t.Errorf("check with both copies damaged: exit %d, stderr %q", r.code, r.stderr)
	}
}

func TestCheckNoCache(t *testing.T) {
	dir := t.TempDir()
	zero := filepath.Join(dir, "zero.img")
	if err := os.WriteFile(zero, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	small := filepath.Join(dir, "small.img")
	if err := os.WriteFile(small, make([]byte, 4096), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{zero, small} {
		r := offline(t, "check", p)
		if r.code != 2 || r.stdout != "" || !strings.Contains(r.stderr, "blockcache: check "+p+": no cache on this device") {
			t.Errorf("check %s: exit %d, stdout %q, stderr %q", p, r.code, r.stdout, r.stderr)
		}
		r = offline(t, "inspect", p)
		if r.code != 2 || !strings.Contains(r.stderr, "blockcache: inspect "+p+": no cache on this device") {
			t.Errorf("inspect %s: exit %d, stderr %q", p, r.code, r.stderr)
		}
	}
	r := offline(t, "inspect", zero, "--json")
	var got inspectOut
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
		t.Fatalf("inspect --json of a zero file: %v\n%s", err, r.stdout)
	}
	if got.Current != nil || len(got.Superblocks) != 2 || got.Superblocks[0].Valid || got.Superblocks[1].Error != "no cache metadata" {
		t.Errorf("inspect --json of a zero file: %+v", got)
	}

	missing := filepath.Join(dir, "missing.img")
	for _, cmd := range []string{"check", "inspect"} {
		r := offline(t, cmd, missing)
		checkFails(t, []string{cmd, missing}, r, "blockcache: "+cmd+" "+missing+": open file device", "no such file or directory")
	}
}

func TestCheckProgressBar(t *testing.T) {
	// Enough lines for two chunks of entry sectors, so that the load
	// reports progress before it ends. Sparse: only metadata is written.
	path := filepath.Join(t.TempDir(), "big.img")
	lines := 2*2048*metadata.EntriesPerSector(8) + 1
	dev, err := file.Open("big", path, file.Options{Create: true, Size: ocf.DeviceBytesFor(lines, 4096)})
	if err != nil {
		t.Fatal(err)
	}
	c, err := ocf.New(dev, ocf.Config{})
	if err == nil {
		err = c.Stop()
	}
	dev.Close()
	if err != nil {
		t.Fatal(err)
	}
	r := offline(t, "check", path, "--progress", "--progress-after", "0s")
	if r.code != 0 {
		t.Fatalf("check: exit %d, stderr %q", r.code, r.stderr)
	}
	if !strings.Contains(r.stderr, "load big.img") || !strings.Contains(r.stderr, "2048/4097") {
		t.Errorf("check --progress: no progress bar on stderr: %q", r.stderr)
	}
	checkSummary(t, r.stdout, map[string]string{"cache lines": fmt.Sprint(lines), "lines": "0"})
	// Not forced, stderr is no terminal: no bar.
	if r := offline(t, "check", path, "--progress-after", "0s"); r.code != 0 || r.stderr != "" {
		t.Errorf("check without --progress: exit %d, stderr %q", r.code, r.stderr)
	}
}

// inspectOut is inspect --json's output, as a consumer reads it.
type inspectOut struct {
	Device      string  `json:"device"`
	SizeBytes   int64   `json:"size_bytes"`
	Current     *string `json:"current"`
	Error       string  `json:"error"`
	Superblocks []struct {
		Copy     string  `json:"copy"`
		Offset   int64   `json:"offset"`
		Valid    bool    `json:"valid"`
		Current  bool    `json:"current"`
		Error    string  `json:"error"`
		Seq      *uint64 `json:"seq"`
		Flags    uint32  `json:"flags"`
		Clean    bool    `json:"clean"`
		CacheID  string  `json:"cache_id"`
		Mode     string  `json:"mode"`
		LineSize int64   `json:"line_size"`
		Geometry struct {
			NumLines         int64 `json:"num_lines"`
			EntrySectors     int64 `json:"entry_sectors"`
			EntriesPerSector int   `json:"entries_per_sector"`
			DataOffset       int64 `json:"data_offset"`
		} `json:"geometry"`
		Cores []coreDump `json:"cores"`
	} `json:"superblocks"`
	Entries *struct {
		EntrySectors int64           `json:"entry_sectors"`
		Lines        []entryDump     `json:"lines"`
		BadSectors   []badSectorDump `json:"bad_sectors"`
		MappedLines  int64           `json:"mapped_lines"`
		DirtyLines   int64           `json:"dirty_lines"`
	} `json:"entries"`
}

func inspectJSONOf(t *testing.T, args ...string) inspectOut {
	t.Helper()
	r := offline(t, append([]string{"inspect", "--json"}, args...)...)
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("inspect --json %q: exit %d, stderr %q", args, r.code, r.stderr)
	}
	var got inspectOut
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
		t.Fatalf("inspect --json: %v\n%s", err, r.stdout)
	}
	return got
}

func TestInspectJSON(t *testing.T) {
	path, id := buildImage(t, true)
	before := readFile(t, path)
	got := inspectJSONOf(t, path, "--entries")
	if !bytes.Equal(before, readFile(t, path)) {
		t.Fatal("inspect changed the image")
	}
	geo := metadata.ComputeGeometry(int64(len(before)), imageLine)
	if got.Device != path || got.SizeBytes != int64(len(before)) || len(got.Superblocks) != 2 || got.Current == nil {
		t.Fatalf("inspect --json: %+v", got)
	}
	// The clean stop wrote the current copy only: it is clean, the other
	// copy (one sequence number older) is not.
	cur, other := got.Superblocks[0], got.Superblocks[1]
	if *got.Current == "B" {
		cur, other = other, cur
	}
	if cur.Copy != *got.Current || !cur.Current || other.Current {
		t.Errorf("current %q, copies %q (current %v) and %q (current %v)", *got.Current, cur.Copy, cur.Current, other.Copy, other.Current)
	}
	if !cur.Valid || !other.Valid || cur.Seq == nil || other.Seq == nil || *other.Seq+1 != *cur.Seq || superblockCopy(*cur.Seq) != cur.Copy {
		t.Fatalf("superblocks %+v, %+v", cur, other)
	}
	if !cur.Clean || cur.Flags != metadata.FlagClean || other.Clean || other.Flags != 0 {
		t.Errorf("clean flags: current %v/%#x, other %v/%#x", cur.Clean, cur.Flags, other.Clean, other.Flags)
	}
	for _, sb := range []string{cur.Copy, other.Copy} {
		s := cur
		if sb == other.Copy {
			s = other
		}
		if s.CacheID != id.String() || s.Mode != "wb" || s.LineSize != imageLine || s.Geometry.NumLines != geo.NumLines ||
			s.Geometry.EntrySectors != geo.EntrySectors || s.Geometry.DataOffset != geo.DataOffset || s.Geometry.EntriesPerSector != 49 {
			t.Errorf("superblock copy %s: %+v", sb, s)
		}
		want := []coreDump{{ID: 3, CoreName: "core0", VolumeName: "vol0", SizeBytes: imageCoreLen, VolumeUUID: imageVolUUID.String()}}
		if fmt.Sprint(s.Cores) != fmt.Sprint(want) {
			t.Errorf("superblock copy %s cores %+v, want %+v", sb, s.Cores, want)
		}
	}
	if wantOff := map[string]int64{"A": 0, "B": 65536}; got.Superblocks[0].Offset != wantOff["A"] || got.Superblocks[1].Offset != wantOff["B"] || got.Superblocks[0].Copy != "A" {
		t.Errorf("copies out of order: %+v", got.Superblocks)
	}

	e := got.Entries
	if e == nil || e.EntrySectors != geo.EntrySectors || e.MappedLines != mappedLines || e.DirtyLines != dirtyLines ||
		len(e.Lines) != mappedLines || len(e.BadSectors) != 0 {
		t.Fatalf("entries: %+v", e)
	}
	byCoreLine := map[uint32]entryDump{}
	for i, l := range e.Lines {
		if l.Core != 3 || l.Problem != "" || l.Sector != l.Line/49 || int64(l.Slot) != l.Line%49 || (i > 0 && l.Line <= e.Lines[i-1].Line) {
			t.Errorf("entry %+v", l)
		}
		byCoreLine[l.CoreLine] = l
	}
	for cl, want := range map[uint32][4]any{
		0:              {"ff", "00", 8, 0},
		cleanLines - 1: {"ff", "00", 8, 0},
		100:            {"ff", "ff", 8, 8},
		partialCore:    {"0c", "0c", 2, 2},
	} {
		l, ok := byCoreLine[cl]
		if got := [4]any{l.Valid, l.Dirty, l.ValidSectors, l.DirtySectors}; !ok || got != want {
			t.Errorf("core line %d: entry %+v (present %v), want masks/counts %v", cl, l, ok, want)
		}
	}
	if _, ok := byCoreLine[cleanLines]; ok {
		t.Errorf("core line %d, never written, has an entry", cleanLines)
	}

	// Without --entries there are none.
	if got := inspectJSONOf(t, path); got.Entries != nil {
		t.Errorf("inspect --json without --entries has entries: %+v", got.Entries)
	}
}

func TestInspectText(t *testing.T) {
	path, id := buildImage(t, true)
	flipByte(t, path, metadata.SuperblockArea+512+40) // entry sector 1
	before := readFile(t, path)
	r := offline(t, "inspect", path, "--entries")
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("inspect: exit %d, stderr %q", r.code, r.stderr)
	}
	if !bytes.Equal(before, readFile(t, path)) {
		t.Fatal("inspect changed the image")
	}
	out := r.stdout
	for _, re := range []string{
		`(?m)^Superblock copy A \(byte offset 0\): valid(, current)?$`,
		`(?m)^Superblock copy B \(byte offset 65536\): valid(, current)?$`,
		`(?m)^  cache id +` + id.String() + `$`,
		`(?m)^  flags +0x1 \(clean shutdown\)$`,
		`(?m)^  flags +0x0 \(not clean: written while the cache ran\)$`,
		`(?m)^  mode +wb$`,
		`(?m)^  line size +4096 bytes \(8 sectors\)$`,
		`(?m)^    core 3 +"core0", 33554432 bytes \(32 MiB\), volume "vol0" ` + imageVolUUID.String() + `$`,
		`(?m)^Current superblock: copy [AB] \(sequence \d+\)$`,
		`(?m)^LINE +SECTOR +SLOT +CORE +CORE LINE +VALID +DIRTY +#VAL +#DIRTY$`,
		`(?m)^0 +0 +0 +3 +0 +ff +00 +8 +0$`,
		// Entry sector 1 is reported where it comes, and the dump goes on
		// to the end.
		`(?m)^!! BAD entry sector 1 \(byte offset 131584, lines 49\.\.97\): corrupt cache metadata: entry sector 1: checksum [0-9a-f]{8}, computed [0-9a-f]{8}$`,
		`(?m)^49 mapped lines \(\d+ with dirty sectors\) in \d+ entry sectors; 1 bad entry sectors$`,
	} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("inspect output does not match %s:\n%s", re, out)
		}
	}
	if strings.Count(out, ", current\n") != 1 {
		t.Errorf("not exactly one current copy:\n%s", out)
	}
	bad := strings.Index(out, "!! BAD")
	if last := strings.LastIndex(out, "\n48 "); last < 0 || last > bad {
		t.Errorf("line 48's entry is not printed before the bad sector:\n%s", out)
	}

	// The JSON says the same, the bad sector apart from the lines.
	got := inspectJSONOf(t, path, "--entries")
	if e := got.Entries; e == nil || len(e.BadSectors) != 1 || e.BadSectors[0].Sector != 1 || e.BadSectors[0].FirstLine != 49 ||
		e.BadSectors[0].LastLine != 97 || e.BadSectors[0].Offset != 131584 || len(e.Lines) != 49 || e.MappedLines != 49 {
		t.Errorf("inspect --json entries of the damaged image: %+v", got.Entries)
	}
}

func TestInspectDamagedSuperblock(t *testing.T) {
	path, _ := buildImage(t, true)
	flipByte(t, path, 20) // copy A's flags
	got := inspectJSONOf(t, path)
	a, b := got.Superblocks[0], got.Superblocks[1]
	if a.Valid || !strings.Contains(a.Error, "superblock checksum") || a.Seq != nil || !b.Valid || !b.Current || got.Current == nil || *got.Current != "B" {
		t.Errorf("inspect with copy A damaged: %+v", got)
	}
	r := offline(t, "inspect", path)
	if r.code != 0 || !strings.Contains(r.stdout, "Superblock copy A (byte offset 0): INVALID: corrupt cache metadata: superblock checksum") ||
		!strings.Contains(r.stdout, "Current superblock: copy B") {
		t.Errorf("inspect with copy A damaged: exit %d\n%s", r.code, r.stdout)
	}
	flipByte(t, path, 65536+20)
	r = offline(t, "inspect", path, "--entries")
	if r.code != 1 || !strings.Contains(r.stdout, "Current superblock: none (superblock copy A: corrupt cache metadata") ||
		strings.Contains(r.stdout, "LINE") || !strings.Contains(r.stderr, "blockcache: inspect "+path+": no valid superblock: superblock copy A") {
		t.Errorf("inspect with both copies damaged: exit %d\nstdout:\n%s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
}

func TestHexMask(t *testing.T) {
	for _, c := range []struct {
		m    [2]uint64
		spl  int
		want string
	}{
		{[2]uint64{0xff, 0}, 8, "ff"},
		{[2]uint64{0x0c, 0}, 8, "0c"},
		{[2]uint64{1, 0}, 16, "0001"},
		{[2]uint64{1<<63 | 1, 0}, 64, "8000000000000001"},
		{[2]uint64{2, 1 << 63}, 128, "80000000000000000000000000000002"},
	} {
		if got := hexMask(c.m, c.spl); got != c.want {
			t.Errorf("hexMask(%x, %d) = %q, want %q", c.m, c.spl, got, c.want)
		}
	}
}
