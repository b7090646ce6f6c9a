package nbd

// Tests against real NBD clients: libnbd's nbdinfo, nbdcopy and nbdsh,
// qemu-img, qemu-io and fio. They are Debian packages that `make deps`
// installs; a missing tool fails the test rather than skipping it, so a
// machine without them cannot pass by accident.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"blockcache/internal/bdev/bdevtest"
	"blockcache/internal/bdev/malloc"
	"blockcache/internal/testutil"
)

const (
	realDiskBlocks = 131072 // 64 MiB of 512-byte blocks
	realDiskSize   = realDiskBlocks * 512
	realPrefs      = 64 << 10
)

// realServer serves "disk" (64 MiB, malloc) and "ro" (read-only, 8 MiB).
func realServer(t *testing.T) (*testServer, *malloc.Device) {
	t.Helper()
	disk := bdevtest.NewMalloc(t, "disk", realDiskBlocks)
	ro := bdevtest.NewMalloc(t, "ro", 16384)
	if err := ro.WriteAt(bytes.Repeat([]byte{0x77}, 8<<20), 0, false); err != nil {
		t.Fatal(err)
	}
	ts := startServer(t,
		Export{Name: "disk", Description: "scratch disk", Device: disk, PreferredBlockSize: realPrefs},
		Export{Name: "ro", Description: "golden image", Device: ro, ReadOnly: true},
	)
	return ts, disk
}

func (ts *testServer) uri(name string) string { return "nbd://" + ts.tcpAddr + "/" + name }
func (ts *testServer) unixURI(name string) string {
	return "nbd+unix:///" + name + "?socket=" + ts.unixPath
}

// randomFile writes n random bytes to a file in dir.
func randomFile(t *testing.T, dir, name string, seed uint64, n int) (string, []byte) {
	t.Helper()
	data := pattern(seed, n)
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p, data
}

// deviceBytes reads [off, off+n) straight from the device.
func deviceBytes(t *testing.T, d *malloc.Device, off int64, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if err := d.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestRealNbdinfo(t *testing.T) {
	t.Parallel()
	ts, _ := realServer(t)
	var list struct {
		Protocol   string `json:"protocol"`
		Structured bool   `json:"structured"`
		Exports    []struct {
			Name        string `json:"export-name"`
			Description string `json:"description"`
		} `json:"exports"`
	}
	if err := json.Unmarshal([]byte(testutil.Run(t, nil, "nbdinfo", "--list", "--json", "nbd://"+ts.tcpAddr)), &list); err != nil {
		t.Fatal(err)
	}
	if list.Protocol != "newstyle-fixed" || !list.Structured || len(list.Exports) != 2 ||
		list.Exports[0].Name != "disk" || list.Exports[0].Description != "scratch disk" ||
		list.Exports[1].Name != "ro" || list.Exports[1].Description != "golden image" {
		t.Fatalf("nbdinfo --list: %+v", list)
	}

	type export struct {
		Size         int64  `json:"export-size"`
		Description  string `json:"description"`
		ReadOnly     bool   `json:"is_read_only"`
		CanFlush     bool   `json:"can_flush"`
		CanFUA       bool   `json:"can_fua"`
		CanTrim      bool   `json:"can_trim"`
		CanZero      bool   `json:"can_zero"`
		CanMultiConn bool   `json:"can_multi_conn"`
		CanDF        bool   `json:"can_df"`
		MinBlock     int    `json:"block_size_minimum"`
		PrefBlock    int    `json:"block_size_preferred"`
		MaxBlock     int    `json:"block_size_maximum"`
	}
	for _, tc := range []struct {
		uri  string
		want export
	}{
		{ts.uri("disk"), export{realDiskSize, "scratch disk", false, true, true, true, true, true, true, 512, realPrefs, 32 << 20}},
		{ts.unixURI("disk"), export{realDiskSize, "scratch disk", false, true, true, true, true, true, true, 512, realPrefs, 32 << 20}},
		{ts.uri("ro"), export{8 << 20, "golden image", true, true, false, false, false, true, true, 512, 4096, 32 << 20}},
	} {
		var got struct{ Exports []export }
		if err := json.Unmarshal([]byte(testutil.Run(t, nil, "nbdinfo", "--json", tc.uri)), &got); err != nil {
			t.Fatal(err)
		}
		if len(got.Exports) != 1 || got.Exports[0] != tc.want {
			t.Errorf("nbdinfo %s:\n got %+v\nwant %+v", tc.uri, got.Exports, tc.want)
		}
	}
	// An unknown export is reported as such.
	out, err := testutil.RunErr(t, nil, "nbdinfo", ts.uri("nope"))
	if err == nil || !strings.Contains(out, "nope") {
		t.Fatalf("nbdinfo on an unknown export: %v\n%s", err, out)
	}
}

func TestRealQemuImgConvertCompare(t *testing.T) {
	t.Parallel()
	ts, disk := realServer(t)
	dir := t.TempDir()
	src, data := randomFile(t, dir, "src.raw", 11, 16<<20)
	testutil.Run(t, nil, "qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", src, ts.uri("disk"))
	if !bytes.Equal(deviceBytes(t, disk, 0, len(data)), data) {
		t.Fatal("device differs from the converted image")
	}
	// qemu-img compare needs equal sizes: compare against a 64 MiB image.
	full := filepath.Join(dir, "full.raw")
	if err := os.WriteFile(full, append(data, make([]byte, realDiskSize-len(data))...), 0o644); err != nil {
		t.Fatal(err)
	}
	testutil.Run(t, nil, "qemu-img", "compare", "-f", "raw", "-F", "raw", full, ts.unixURI("disk"))
	// compare must notice a difference.
	if err := disk.WriteAt(make([]byte, 512), 8<<20, false); err != nil {
		t.Fatal(err)
	}
	if out, err := testutil.RunErr(t, nil, "qemu-img", "compare", "-f", "raw", "-F", "raw", full, ts.uri("disk")); err == nil {
		t.Fatalf("qemu-img compare missed a changed sector:\n%s", out)
	}
}

func TestRealQemuIO(t *testing.T) {
	t.Parallel()
	ts, disk := realServer(t)
	for _, uri := range []string{ts.uri("disk"), ts.unixURI("disk")} {
		out := testutil.Run(t, nil, "qemu-io", "-f", "raw",
			"-c", "write -P 0xab 0 64k",
			"-c", "read -P 0xab 0 64k",
			"-c", "write -f -P 0xcd 1M 4k", // FUA
			"-c", "aio_write -P 0x11 2M 128k",
			"-c", "aio_write -P 0x22 3M 128k",
			"-c", "aio_flush",
			"-c", "read -P 0x11 2M 128k",
			"-c", "read -P 0x22 3M 128k",
			"-c", "write -z 32k 16k",
			"-c", "read -P 0 32k 16k",
			"-c", "read -P 0xab 48k 16k",
			"-c", "discard 1M 4k",
			"-c", "read -P 0 1M 4k",
			"-c", "flush",
			uri)
		if strings.Contains(out, "failed") || strings.Contains(out, "error") {
			t.Fatalf("qemu-io on %s:\n%s", uri, out)
		}
		want := cat(bytes.Repeat([]byte{0xab}, 32<<10), make([]byte, 16<<10), bytes.Repeat([]byte{0xab}, 16<<10))
		if !bytes.Equal(deviceBytes(t, disk, 0, 64<<10), want) {
			t.Fatal("device does not hold what qemu-io wrote")
		}
		if !bytes.Equal(deviceBytes(t, disk, 3<<20, 128<<10), bytes.Repeat([]byte{0x22}, 128<<10)) {
			t.Fatal("device does not hold qemu-io's aio_write")
		}
	}
	// A wrong pattern is noticed, so the checks above mean something.
	out, _ := testutil.RunErr(t, nil, "qemu-io", "-f", "raw", "-c", "read -P 0xee 0 4k", ts.uri("disk"))
	if !strings.Contains(out, "Pattern verification failed") {
		t.Fatalf("qemu-io did not notice a wrong pattern:\n%s", out)
	}
	// qemu sees the read-only flag: it will not open the export for
	// writing, and reads it fine read-only.
	out, err := testutil.RunErr(t, nil, "qemu-io", "-f", "raw", "-c", "write -P 1 0 4k", ts.uri("ro"))
	if err == nil || !strings.Contains(out, "Permission denied") {
		t.Fatalf("qemu-io opened a read-only export for writing: %v\n%s", err, out)
	}
	out = testutil.Run(t, nil, "qemu-io", "-r", "-f", "raw", "-c", "read -P 0x77 0 1M", ts.unixURI("ro"))
	if strings.Contains(out, "failed") {
		t.Fatalf("qemu-io read of the read-only export:\n%s", out)
	}
	if !bytes.Equal(deviceBytes(t, disk, 0, 512), bytes.Repeat([]byte{0xab}, 512)) {
		t.Fatal("disk changed")
	}
}

func TestRealNbdcopy(t *testing.T) {
	t.Parallel()
	ts, disk := realServer(t)
	dir := t.TempDir()
	src, data := randomFile(t, dir, "src.raw", 21, realDiskSize)
	testutil.Run(t, nil, "nbdcopy", "--connections=4", "--requests=32", src, ts.uri("disk"))
	if !bytes.Equal(deviceBytes(t, disk, 0, realDiskSize), data) {
		t.Fatal("device differs from the copied file")
	}
	dst := filepath.Join(dir, "dst.raw")
	testutil.Run(t, nil, "nbdcopy", ts.unixURI("disk"), dst)
	got, err := os.ReadFile(dst)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatal("copy out of the export differs")
	}
	// Export to export, read-only source.
	testutil.Run(t, nil, "nbdcopy", ts.uri("ro"), ts.uri("disk"))
	if !bytes.Equal(deviceBytes(t, disk, 0, 8<<20), bytes.Repeat([]byte{0x77}, 8<<20)) {
		t.Fatal("export-to-export copy differs")
	}
}

func TestRealNbdsh(t *testing.T) {
	t.Parallel()
	env := testutil.NbdshEnv(t)
	ts, disk := realServer(t)
	script := fmt.Sprintf(`
import os
SIZE = %d
assert h.get_size() == SIZE, h.get_size()
assert h.get_structured_replies_negotiated()
assert h.can_flush() and h.can_fua() and h.can_trim() and h.can_zero() and h.can_multi_conn() and h.can_df()
assert not h.is_read_only()
assert h.get_block_size(nbd.SIZE_MINIMUM) == 512
assert h.get_block_size(nbd.SIZE_PREFERRED) == %d
assert h.get_block_size(nbd.SIZE_MAXIMUM) == 32 << 20

buf = os.urandom(1 << 20)
h.pwrite(buf, 0, nbd.CMD_FLAG_FUA)
assert h.pread(1 << 20, 0) == buf
h.trim(65536, 0)
assert h.pread(65536, 0) == bytes(65536)
h.zero(65536, 65536, nbd.CMD_FLAG_NO_HOLE)
assert h.pread(65536, 65536) == bytes(65536)
assert h.pread(65536, 131072) == buf[131072:196608]
h.flush()

chunks = []
def chunk(subbuf, offset, status, error):
    chunks.append((offset, status, len(subbuf)))
    return 0
data = h.pread_structured(65536, 131072, chunk, nbd.CMD_FLAG_DF)
assert data == buf[131072:196608]
assert chunks == [(131072, nbd.READ_DATA, 65536)], chunks

# Let the server judge bad requests instead of libnbd.
h.set_strict_mode(0)
def fails(errno, f, *args):
    try:
        f(*args)
    except nbd.Error as e:
        assert e.errno == errno, (f, e.errno, e.string)
        return
    raise AssertionError("%%s%%r succeeded" %% (f.__name__, args))
fails("EINVAL", h.pread, 1024, SIZE - 512)
fails("ENOSPC", h.pwrite, bytes(1024), SIZE - 512)
fails("EINVAL", h.pread, 512, 100)
fails("EOVERFLOW", h.pread, (32 << 20) + 512, 0)
assert h.pread(512, 262144) == buf[262144:262656]

# Many requests in flight at once, completing in any order.
pending = {h.aio_pwrite(bytes([i]) * 4096, (1 << 21) + i * 4096) for i in range(64)}
assert h.aio_in_flight() > 1, h.aio_in_flight()
while pending:
    h.poll(-1)
    pending = {c for c in pending if not h.aio_command_completed(c)}
for i in range(64):
    assert h.pread(4096, (1 << 21) + i * 4096) == bytes([i]) * 4096
print("nbdsh ok")
`, realDiskSize, realPrefs)
	out := testutil.Run(t, env, "nbdsh", "-u", ts.uri("disk"), "-c", script)
	if !strings.Contains(out, "nbdsh ok") {
		t.Fatalf("nbdsh:\n%s", out)
	}
	if !bytes.Equal(deviceBytes(t, disk, 2<<20+63*4096, 4096), bytes.Repeat([]byte{63}, 4096)) {
		t.Fatal("device does not hold nbdsh's aio writes")
	}
	// Read-only export over the Unix socket.
	out = testutil.Run(t, env, "nbdsh", "-u", ts.unixURI("ro"), "-c", `
assert h.is_read_only()
assert not h.can_trim() and not h.can_fua()
assert h.pread(4096, 0) == b"\x77" * 4096
h.set_strict_mode(0)
try:
    h.pwrite(b"x" * 512, 0)
    raise AssertionError("write to a read-only export succeeded")
except nbd.Error as e:
    assert e.errno == "EPERM", e.errno
assert h.pread(512, 0) == b"\x77" * 512
print("ro ok")
`)
	if !strings.Contains(out, "ro ok") {
		t.Fatalf("nbdsh ro:\n%s", out)
	}
}

func TestRealFio(t *testing.T) {
	t.Parallel()
	ts, _ := realServer(t)
	for _, uri := range []string{ts.uri("disk"), ts.unixURI("disk")} {
		out := testutil.Run(t, nil, "fio", "--name=nbd", "--ioengine=nbd", "--uri="+uri,
			"--rw=randrw", "--bs=4k", "--iodepth=32", "--numjobs=2",
			"--size=8m", "--offset_increment=16m", "--verify=crc32c", "--verify_fatal=1",
			"--group_reporting", "--output-format=terse", "--terse-version=3")
		// Terse v3: field 3 (1-based) is the job name, then error at field 5;
		// read IO (KiB) at field 6 and write IO at field 47.
		f := strings.Split(strings.TrimSpace(out[strings.LastIndex(strings.TrimSpace(out), "\n")+1:]), ";")
		if len(f) < 50 || f[4] != "0" || f[5] == "0" || f[46] == "0" {
			t.Fatalf("fio on %s did not both read and write without error:\n%s", uri, out)
		}
	}
}
