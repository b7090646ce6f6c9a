package e2e

// Real NBD clients against cached volumes of the real daemon.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"blockcache/internal/testutil"
)

const (
	imageSize = 16 << 20 // bigger than the cache, so lines are evicted
	cacheMiB  = 8
	coreMiB   = 64
)

// ocfStats is the part of bdev_ocf_get_stats the tests read.
type ocfStats struct {
	Usage struct {
		Occupancy statLeaf `json:"occupancy"`
		Dirty     statLeaf `json:"dirty"`
	} `json:"usage"`
	Requests struct {
		RdTotal  statLeaf `json:"rd_total"`
		WrTotal  statLeaf `json:"wr_total"`
		RdPT     statLeaf `json:"rd_pt"`
		WrPT     statLeaf `json:"wr_pt"`
		Serviced statLeaf `json:"serviced"`
		Total    statLeaf `json:"total"`
	} `json:"requests"`
}

type statLeaf struct {
	Count      uint64 `json:"count"`
	Percentage string `json:"percentage"`
	Units      string `json:"units"`
}

func (d *Daemon) stats(t *testing.T, name string) ocfStats {
	t.Helper()
	var s ocfStats
	d.CallInto(t, "bdev_ocf_get_stats", map[string]any{"name": name}, &s)
	return s
}

// TestQemuImgEveryCacheMode copies a random image bigger than the cache into
// a cached volume in each mode with qemu-img convert, compares it back, then
// deletes the vbdev (which writes dirty data back) and compares the core
// bdev alone.
func TestQemuImgEveryCacheMode(t *testing.T) {
	t.Parallel()
	testutil.RequireTool(t, "qemu-img")
	d := StartDaemon(t, DaemonOpts{Bare: true})
	dir := t.TempDir()
	img := writeFile(t, dir, "image.raw", randomBytes(1, imageSize))
	for _, mode := range []string{"wt", "wb", "wa", "wi", "pt", "wo"} {
		t.Run(mode, func(t *testing.T) {
			name := "Vol_" + mode
			uri := d.createCachedVolume(t, name, mode, cacheMiB, coreMiB, 0)
			testutil.Run(t, nil, "qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", img, uri)
			// compare reads all 64 MiB: the image, then zeroes.
			expectSameImage(t, mode+": after qemu-img convert", img, uri)
			s := d.stats(t, name)
			if s.Requests.WrTotal.Count+s.Requests.WrPT.Count == 0 || s.Requests.Total.Count == 0 {
				t.Fatalf("%s: stats count no writes after qemu-img convert: %+v", mode, s.Requests)
			}
			occ := s.Usage.Occupancy.Count
			switch mode {
			case "pt", "wi":
				// Writes go around the cache (wi: invalidating); reads in
				// pt are not inserted either.
				if mode == "pt" && occ != 0 {
					t.Errorf("pt: occupancy %d after writes and reads, want 0", occ)
				}
			default:
				if occ == 0 || occ > cacheMiB<<20/4096 {
					t.Errorf("%s: occupancy %d 4KiB blocks, want 1..%d", mode, occ, cacheMiB<<20/4096)
				}
			}
			if (mode == "wb" || mode == "wo") && s.Usage.Dirty.Count == 0 {
				t.Errorf("%s: no dirty blocks after writing %d MiB", mode, imageSize>>20)
			}
			if mode != "wb" && mode != "wo" && s.Usage.Dirty.Count != 0 {
				t.Errorf("%s: %d dirty blocks, want none", mode, s.Usage.Dirty.Count)
			}

			// The core alone must hold everything once the vbdev is deleted.
			d.Call(t, "nbd_stop_disk", map[string]any{"nbd_device": uri})
			d.Call(t, "bdev_ocf_delete", map[string]any{"name": name})
			var coreURI string
			d.CallInto(t, "nbd_start_disk", map[string]any{"bdev_name": name + "_core"}, &coreURI)
			expectSameImage(t, fmt.Sprintf("%s: core after bdev_ocf_delete", mode), img, coreURI)
			d.Call(t, "nbd_stop_disk", map[string]any{"nbd_device": coreURI})
			d.Call(t, "bdev_malloc_delete", map[string]any{"name": name + "_core"})
			d.Call(t, "bdev_malloc_delete", map[string]any{"name": name + "_cache"})
		})
	}
}

// TestQemuIoPatterns writes and reads patterns with qemu-io, FUA included.
func TestQemuIoPatterns(t *testing.T) {
	t.Parallel()
	d := StartDaemon(t, DaemonOpts{Bare: true})
	uri := d.createCachedVolume(t, "Pat", "wb", cacheMiB, coreMiB, 8)
	out := testutil.Run(t, nil, "qemu-io", "-f", "raw",
		"-c", "write -P 0xab 0 64k",
		"-c", "write -f -P 0xcd 1m 128k", // -f is FUA
		"-c", "write -P 0x11 63m 1m", // the last MiB
		"-c", "flush",
		"-c", "read -P 0xab 0 64k",
		"-c", "read -P 0xcd 1m 128k",
		"-c", "read -P 0x11 63m 1m",
		"-c", "read -P 0 64k 960k",
		uri)
	if strings.Contains(out, "Pattern verification failed") || strings.Count(out, "wrote ") != 3 || strings.Count(out, "read ") != 4 {
		t.Fatalf("qemu-io:\n%s", out)
	}
	// A second connection sees the same data.
	out = testutil.Run(t, nil, "qemu-io", "-f", "raw", "-r", "-c", "read -P 0xcd 1m 128k", uri)
	if strings.Contains(out, "Pattern verification failed") || !strings.Contains(out, "read 131072/131072 bytes") {
		t.Fatalf("qemu-io, second connection:\n%s", out)
	}
	// And a wrong pattern is noticed: the check can fail.
	out, _ = testutil.RunErr(t, nil, "qemu-io", "-f", "raw", "-r", "-c", "read -P 0xab 1m 4k", uri)
	if !strings.Contains(out, "Pattern verification failed") {
		t.Fatalf("qemu-io did not notice a wrong pattern:\n%s", out)
	}
}

// TestNbdinfo checks the export list and one export's size and block sizes:
// minimum 512, preferred the cache line size.
func TestNbdinfo(t *testing.T) {
	t.Parallel()
	d := StartDaemon(t, DaemonOpts{Bare: true})
	d.createCachedVolume(t, "Info16", "wt", cacheMiB, coreMiB, 16)
	d.createCachedVolume(t, "Info4", "wb", cacheMiB, 32, 0)

	var list struct {
		Exports []struct {
			Name        string `json:"export-name"`
			Description string `json:"description"`
		} `json:"exports"`
	}
	out := testutil.Run(t, nil, "nbdinfo", "--list", "--json", "nbd://"+d.NBDAddr)
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatalf("nbdinfo --list --json: %v\n%s", err, out)
	}
	names := []string{}
	for _, e := range list.Exports {
		names = append(names, e.Name)
	}
	if strings.Join(names, ",") != "Info16,Info4" {
		t.Fatalf("nbdinfo --list: exports %v, want [Info16 Info4]\n%s", names, out)
	}
	plain := testutil.Run(t, nil, "nbdinfo", "--list", "nbd://"+d.NBDAddr)
	if !strings.Contains(plain, "export=\"Info16\"") || !strings.Contains(plain, "export=\"Info4\"") {
		t.Fatalf("nbdinfo --list:\n%s", plain)
	}

	for _, c := range []struct {
		name      string
		size      int64
		preferred int
	}{{"Info16", coreMiB << 20, 16384}, {"Info4", 32 << 20, 4096}} {
		out := testutil.Run(t, nil, "nbdinfo", "--json", d.URI(c.name))
		var info struct {
			Exports []struct {
				Name      string `json:"export-name"`
				Size      int64  `json:"export-size"`
				Min       int    `json:"block_size_minimum"`
				Preferred int    `json:"block_size_preferred"`
				Max       int    `json:"block_size_maximum"`
				ReadOnly  bool   `json:"is_read_only"`
				CanFlush  bool   `json:"can_flush"`
			} `json:"exports"`
		}
		if err := json.Unmarshal([]byte(out), &info); err != nil || len(info.Exports) != 1 {
			t.Fatalf("nbdinfo --json %s: %v\n%s", c.name, err, out)
		}
		e := info.Exports[0]
		if e.Name != c.name || e.Size != c.size || e.Min != 512 || e.Preferred != c.preferred ||
			e.Max < e.Preferred || e.ReadOnly || !e.CanFlush {
			t.Fatalf("nbdinfo --json %s: %+v, want size %d, block sizes 512/%d, writable, flushable", c.name, e, c.size, c.preferred)
		}
	}
	// An unknown export is refused.
	if out, err := testutil.RunErr(t, nil, "nbdinfo", d.URI("NoSuchExport")); err == nil {
		t.Fatalf("nbdinfo of an unknown export succeeded:\n%s", out)
	}
}

// TestNbdcopy copies a file into a volume and the volume back out, and one
// volume into another.
func TestNbdcopy(t *testing.T) {
	t.Parallel()
	d := StartDaemon(t, DaemonOpts{Bare: true})
	a := d.createCachedVolume(t, "CopyA", "wb", cacheMiB, 16, 0)
	b := d.createCachedVolume(t, "CopyB", "wt", cacheMiB, 16, 0)
	dir := t.TempDir()
	data := randomBytes(2, 16<<20)
	src := writeFile(t, dir, "src.raw", data)
	testutil.Run(t, nil, "nbdcopy", src, a)
	testutil.Run(t, nil, "nbdcopy", a, b)
	dst := filepath.Join(dir, "dst.raw")
	testutil.Run(t, nil, "nbdcopy", b, dst)
	got, err := os.ReadFile(dst)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("file -> %s -> %s -> file: %d bytes differ from the %d written", a, b, countDiff(got, data), len(data))
	}
}

func countDiff(a, b []byte) int {
	n := max(len(a), len(b)) - min(len(a), len(b))
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			n++
		}
	}
	return n
}

// TestFio runs a short random read/write fio job with verification on a
// write-back volume whose working set exceeds the cache.
func TestFio(t *testing.T) {
	t.Parallel()
	d := StartDaemon(t, DaemonOpts{Bare: true})
	uri := d.createCachedVolume(t, "Fio", "wb", cacheMiB, coreMiB, 0)
	out := testutil.Run(t, nil, "fio", "--name=e2e", "--ioengine=nbd", "--uri="+uri,
		"--rw=randrw", "--bs=4k", "--iodepth=32", "--numjobs=2",
		"--size=8m", "--offset_increment=16m", "--verify=crc32c", "--verify_fatal=1",
		"--group_reporting", "--output-format=terse", "--terse-version=3")
	// Terse v3: field 5 (1-based) is the error, field 6 the KiB read and
	// field 47 the KiB written.
	last := strings.TrimSpace(out)
	last = last[strings.LastIndex(last, "\n")+1:]
	f := strings.Split(last, ";")
	if len(f) < 50 || f[4] != "0" || f[5] == "0" || f[46] == "0" {
		t.Fatalf("fio did not both read and write without error:\n%s", out)
	}
	s := d.stats(t, "Fio")
	if s.Requests.RdTotal.Count == 0 || s.Requests.WrTotal.Count == 0 {
		t.Fatalf("stats after fio: %+v", s.Requests)
	}
	if s.Usage.Occupancy.Units != "4KiB blocks" {
		t.Fatalf("occupancy units %q", s.Usage.Occupancy.Units)
	}
}

// TestModeSwitchUnderIO runs a verifying fio job on a write-back volume
// while the cache mode cycles through all six modes and stats are read and
// reset: every byte fio wrote must read back in whatever mode is current.
func TestModeSwitchUnderIO(t *testing.T) {
	t.Parallel()
	d := StartDaemon(t, DaemonOpts{Bare: true})
	uri := d.createCachedVolume(t, "Switch", "wb", cacheMiB, coreMiB, 0)
	c := d.Dial(t)
	stop := make(chan struct{})
	switched := make(chan error, 1)
	go func() {
		modes := []string{"wt", "pt", "wa", "wb", "wi", "wo"}
		n := 0
		for i := 0; ; i++ {
			select {
			case <-stop:
				if n < len(modes) {
					switched <- fmt.Errorf("only %d mode changes during the fio run", n)
				} else {
					switched <- nil
				}
				return
			case <-time.After(30 * time.Millisecond):
			}
			m := modes[i%len(modes)]
			res, err := c.Call("bdev_ocf_set_cache_mode", map[string]any{"name": "Switch", "mode": m})
			if err != nil || string(res) != `"`+m+`"` {
				switched <- fmt.Errorf("set_cache_mode %s: %s, %v", m, res, err)
				return
			}
			if _, err := c.Call("bdev_ocf_get_stats", map[string]any{"name": "Switch"}); err != nil {
				switched <- err
				return
			}
			if i%5 == 0 {
				if _, err := c.Call("bdev_ocf_reset_stats", map[string]any{"name": "Switch"}); err != nil {
					switched <- err
					return
				}
			}
			n++
		}
	}()
	fioArgs := func(uri string) []string {
		return []string{"--name=switch", "--ioengine=nbd", "--uri=" + uri,
			"--rw=randrw", "--bs=4k", "--iodepth=16", "--numjobs=2",
			"--size=8m", "--offset_increment=16m", "--verify=crc32c", "--verify_fatal=1",
			"--group_reporting", "--output-format=terse", "--terse-version=3"}
	}
	out := testutil.Run(t, nil, "fio", fioArgs(uri)...)
	close(stop)
	if err := <-switched; err != nil {
		t.Fatal(err)
	}
	last := strings.TrimSpace(out)
	last = last[strings.LastIndex(last, "\n")+1:]
	if f := strings.Split(last, ";"); len(f) < 50 || f[4] != "0" || f[5] == "0" || f[46] == "0" {
		t.Fatalf("fio while the mode changed:\n%s", out)
	}
	// bdev_ocf_delete writes back what is dirty, whatever mode wrote it:
	// the core alone passes fio's verification of the same job.
	d.Call(t, "nbd_stop_disk", map[string]any{"nbd_device": uri})
	d.Call(t, "bdev_ocf_delete", map[string]any{"name": "Switch"})
	var coreURI string
	d.CallInto(t, "nbd_start_disk", map[string]any{"bdev_name": "Switch_core"}, &coreURI)
	out = testutil.Run(t, nil, "fio", append(fioArgs(coreURI), "--verify_only")...)
	last = strings.TrimSpace(out)
	last = last[strings.LastIndex(last, "\n")+1:]
	if f := strings.Split(last, ";"); len(f) < 50 || f[4] != "0" || f[5] == "0" {
		t.Fatalf("fio --verify_only on the core after bdev_ocf_delete:\n%s", out)
	}
}

// TestNBDUnixSocket runs the daemon with NBD on a Unix socket only: the
// exports' URIs are nbd+unix ones and real clients use them.
func TestNBDUnixSocket(t *testing.T) {
	t.Parallel()
	sock := filepath.Join(shortTempDir(t), "nbd.sock")
	d := StartDaemon(t, DaemonOpts{Bare: true, NBDListen: "none", Args: []string{"--nbd-socket", sock}})
	if !strings.Contains(d.Stderr(), `nbd="nbd+unix:///?socket=`+sock+`"`) {
		t.Fatalf("ready line does not name the NBD socket:\n%s", d.Stderr())
	}
	d.Call(t, "bdev_malloc_create", mallocParams("UCache", 8, 512))
	d.Call(t, "bdev_malloc_create", mallocParams("UCore", 16, 512))
	d.Call(t, "bdev_ocf_create", ocfParams("UVol", "wb", "UCache", "UCore", 0))
	var uri string
	d.CallInto(t, "nbd_start_disk", map[string]any{"bdev_name": "UVol"}, &uri)
	if want := "nbd+unix:///UVol?socket=" + sock; uri != want {
		t.Fatalf("nbd_start_disk returned %q, want %q", uri, want)
	}
	qemuIO(t, uri, "write -P 0x5e 0 128k", "read -P 0x5e 0 128k")
	out := testutil.Run(t, nil, "nbdinfo", "--json", uri)
	if !strings.Contains(out, `"export-size": 16777216`) {
		t.Fatalf("nbdinfo %s:\n%s", uri, out)
	}
	d.Stop(t)
	if _, err := os.Stat(sock); err == nil {
		t.Fatal("the NBD socket is left behind after shutdown")
	}
}

// TestNbdsh drives a write-back volume with libnbd's nbdsh: zeroing and
// trimming over dirty cache lines, FUA, many requests in flight, and
// requests the server must reject with the connection staying usable.
func TestNbdsh(t *testing.T) {
	t.Parallel()
	env := testutil.NbdshEnv(t)
	d := StartDaemon(t, DaemonOpts{Bare: true})
	uri := d.createCachedVolume(t, "Sh", "wb", cacheMiB, 16, 8)
	script := `
import os
SIZE = 16 << 20
assert h.get_size() == SIZE, h.get_size()
assert h.get_block_size(nbd.SIZE_MINIMUM) == 512
assert h.get_block_size(nbd.SIZE_PREFERRED) == 8192, h.get_block_size(nbd.SIZE_PREFERRED)
assert h.can_flush() and h.can_fua() and h.can_zero() and not h.is_read_only()

buf = os.urandom(4 << 20)
h.pwrite(buf, 0)
# Zeroes over dirty lines, part of a line included.
h.zero(512 << 10, 1 << 20)
h.zero(4096, (3 << 20) + 512, nbd.CMD_FLAG_NO_HOLE)
got = h.pread(4 << 20, 0)
want = bytearray(buf)
want[1 << 20:(1 << 20) + (512 << 10)] = bytes(512 << 10)
want[(3 << 20) + 512:(3 << 20) + 512 + 4096] = bytes(4096)
assert got == bytes(want), "zeroes over dirty data read back wrong"
if h.can_trim():
    h.trim(65536, 2 << 20)
    h.pwrite(b"\x5a" * 65536, 2 << 20, nbd.CMD_FLAG_FUA)
    assert h.pread(65536, 2 << 20) == b"\x5a" * 65536
h.flush()

pending = {h.aio_pwrite(bytes([i]) * 8192, (8 << 20) + i * 8192) for i in range(96)}
while pending:
    h.poll(-1)
    pending = {c for c in pending if not h.aio_command_completed(c)}
for i in range(96):
    assert h.pread(8192, (8 << 20) + i * 8192) == bytes([i]) * 8192

h.set_strict_mode(0)
def fails(errno, f, *args):
    try:
        f(*args)
    except nbd.Error as e:
        assert e.errno == errno, (f.__name__, args, e.errno, e.string)
        return
    raise AssertionError("%s%r succeeded" % (f.__name__, args))
fails("EINVAL", h.pread, 512, 100)
fails("EINVAL", h.pwrite, bytes(100), 4096)
fails("EINVAL", h.pread, 1024, SIZE - 512)
fails("ENOSPC", h.pwrite, bytes(1024), SIZE - 512)
assert h.pread(4096, 0) == buf[:4096]
print("nbdsh ok")
`
	out := testutil.Run(t, env, "nbdsh", "-u", uri, "-c", script)
	if !strings.Contains(out, "nbdsh ok") {
		t.Fatalf("nbdsh:\n%s", out)
	}
	// What nbdsh left must survive write-back to the core.
	d.Call(t, "nbd_stop_disk", map[string]any{"nbd_device": uri})
	d.Call(t, "bdev_ocf_delete", map[string]any{"name": "Sh"})
	var core string
	d.CallInto(t, "nbd_start_disk", map[string]any{"bdev_name": "Sh_core"}, &core)
	qemuIO(t, core, "read -P 0 1m 512k", "read -P 0x5f 9166848 8k") // block 95 of the aio writes
	d.Stop(t)
}
