package e2e

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"blockcache/internal/testutil"
)

// TestZeroedSuperblocksRecover is the reproduction turned into a
// test: a write-back volume on image files takes writes from qemu-io and a
// flush, the daemon is killed, and the first 128 KiB of cache.img (both
// superblock copies) are zeroed. The restart must not initialise a fresh
// cache over the remains: the volume is refused with a message naming
// what was found and what to do. `blockcache recover` then brings the
// dirty data back to core.img, checked byte for byte against what was
// written.
func TestZeroedSuperblocksRecover(t *testing.T) {
	t.Parallel()
	const cacheBytes, coreBytes = 16 << 20, 32 << 20
	files := sparseFiles(t, map[string]int64{"cache.img": cacheBytes, "core.img": coreBytes})
	cacheImg, coreImg := filepath.Join(files, "cache.img"), filepath.Join(files, "core.img")
	dataDir := filepath.Join(t.TempDir(), "data")
	if err := os.MkdirAll(dataDir, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, dataDir, "config.json", []byte(`{"subsystems":[]}`+"\n"))

	d := StartDaemon(t, DaemonOpts{DataDir: dataDir})
	d.Call(t, "bdev_aio_create", aioParams(cacheImg, "RCache"))
	d.Call(t, "bdev_aio_create", aioParams(coreImg, "RCore"))
	d.Call(t, "bdev_ocf_create", ocfParams("RVol", "wb", "RCache", "RCore", 0))
	d.Call(t, "nbd_start_disk", map[string]any{"bdev_name": "RVol"})

	// Writes of 512 bytes to 96 KiB of random data, some overlapping, then
	// a flush: all of it is durable, and dirty in the cache.
	want := make([]byte, coreBytes)
	r := rand.New(rand.NewPCG(11, 0x7265636f76))
	srcDir := t.TempDir()
	args := []string{"-f", "raw"}
	for i := range 64 {
		n := (1 + r.IntN(192)) * 512
		off := r.IntN((coreBytes-n)/512) * 512
		data := randomBytes(uint64(i)+100, n)
		src := writeFile(t, srcDir, fmt.Sprintf("w%d", i), data)
		args = append(args, "-c", fmt.Sprintf("write -q -s %s %d %d", src, off, n))
		copy(want[off:], data)
	}
	args = append(args, "-c", "flush", d.URI("RVol"))
	testutil.Run(t, nil, "qemu-io", args...)
	// What the volume serves is what was written.
	got := filepath.Join(t.TempDir(), "vol.raw")
	testutil.Run(t, nil, "qemu-img", "convert", "-f", "raw", "-O", "raw", d.URI("RVol"), got)
	if b, err := os.ReadFile(got); err != nil || !bytes.Equal(b, want) {
		t.Fatalf("the volume does not read back what qemu-io wrote (err %v)", err)
	}
	d.Kill(t)

	testutil.ZeroRange(t, cacheImg, 0, 128<<10)

	// The restart refuses the volume. Whether the daemon then stays up
	// with the volume failed, or exits, the message must say what was
	// found and what to do.
	d2 := startProcess(t, DaemonOpts{DataDir: dataDir})
	refusal := waitLogLine(t, d2, "holds no readable superblock but", 30*time.Second)
	for _, w := range []string{`cache device \"RCache\"`, "entry sectors of cache", "dirty lines",
		"run 'blockcache recover' to write them back, or pass force to discard them"} {
		if !strings.Contains(refusal, w) && !strings.Contains(refusal, strings.ReplaceAll(w, `\"`, `"`)) {
			t.Errorf("refusal does not say %q:\n%s", w, refusal)
		}
	}
	t.Logf("restart: %s", refusal)
	if strings.Contains(d2.Stderr(), "cache started") {
		t.Fatalf("the restart initialised a fresh cache over the remains:\n%s", d2.Stderr())
	}
	if d2.ready() {
		if vb := d2.ocfBdevs(t, "RVol"); len(vb) == 1 && vb[0].Started {
			t.Fatalf("RVol started after the refusal: %+v", vb)
		}
		d2.Stop(t)
	} else {
		d2.Wait(t, 30*time.Second)
	}

	// Nothing reached the core yet; recover brings it all back.
	if b := readAll(t, coreImg); bytes.Equal(b, want) {
		t.Fatal("the core already holds the written data: the test would prove nothing")
	}
	dry := exec.Command(binPath, "recover", cacheImg, "--core", "0="+coreImg, "--dry-run")
	if out, err := dry.CombinedOutput(); err != nil || !strings.Contains(string(out), "nothing was written") {
		t.Fatalf("recover --dry-run: %v\n%s", err, out)
	}
	rec := exec.Command(binPath, "recover", cacheImg, "--core", "0="+coreImg)
	out, err := rec.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "no superblock") {
		t.Fatalf("recover: %v\n%s", err, out)
	}
	t.Logf("recover:\n%s", out)
	b := readAll(t, coreImg)
	for off := 0; off < coreBytes; off += 512 {
		if !bytes.Equal(b[off:off+512], want[off:off+512]) {
			t.Fatalf("core.img after recover differs from what was written at byte %d\nrecover said:\n%s", off, out)
		}
	}
}

func readAll(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// waitLogLine waits for a log line of d containing s, whether d stays up
// or exits, and returns it.
func waitLogLine(t *testing.T, d *Daemon, s string, timeout time.Duration) string {
	t.Helper()
	line, err := d.stderr.wait(s, timeout, d.exited)
	if errors.Is(err, errExited) {
		t.Fatalf("blockcache exited (%v) without logging %q:\n%s", d.waitErr, s, d.Stderr())
	}
	if err != nil {
		t.Fatalf("%v:\n%s", err, d.Stderr())
	}
	return line
}

// ready reports whether d is up and answering: it logged its ready line
// (waiting a little for it) and has not exited.
func (d *Daemon) ready() bool {
	if err := d.waitReady(10 * time.Second); err != nil {
		return false
	}
	select {
	case <-d.exited:
		return false
	default:
		return true
	}
}
