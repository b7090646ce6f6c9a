package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"blockcache/internal/testutil"
)

// remoteWriter writes through an NBD URI with nbdsh, one write after
// another, cycling through a list of overlapping writes [offset, length]
// inside a region, until told to stop; write i fills its range with the
// byte 1 + i%251.
type remoteWriter struct {
	ops  [][2]int
	stop string // the file whose existence stops the writer
	done chan remoteWriterResult
}

type remoteWriterResult struct {
	count int
	lost  bool // the first flush failed with EIO: a lost session was reported
	err   error
}

// startRemoteWriter starts the writer on uri over [0, region).
func startRemoteWriter(t *testing.T, uri string, seed uint64, region int) *remoteWriter {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, 7))
	w := &remoteWriter{stop: filepath.Join(t.TempDir(), "stop"), done: make(chan remoteWriterResult, 1)}
	for range 500 {
		length := (1 + r.IntN(16)) * 4096
		w.ops = append(w.ops, [2]int{r.IntN((region-length)/4096) * 4096, length})
	}
	env := testutil.NbdshEnv(t)
	b, _ := json.Marshal(w.ops)
	ops := writeFile(t, t.TempDir(), "ops.json", b)
	script := fmt.Sprintf(`
import errno, json, os
ops = json.load(open(%q))
i = 0
while i < 50 or not os.path.exists(%q):
    off, n = ops[i %% len(ops)]
    h.pwrite(bytes([1 + i %% 251]) * n, off)
    i += 1
try:
    h.flush()
except nbd.Error as e:
    if e.errnum != errno.EIO:
        raise
    print("lost")
    h.flush()
print("count", i)
`, ops, w.stop)
	go func() {
		out, err := testutil.RunErr(t, env, "nbdsh", "-u", uri, "-c", script)
		var res remoteWriterResult
		if err != nil {
			res.err = fmt.Errorf("nbdsh: %v\n%s", err, out)
		} else if _, err := fmt.Sscanf(out[bytes.LastIndex([]byte(out), []byte("count")):], "count %d", &res.count); err != nil {
			res.err = fmt.Errorf("nbdsh output %q: %v", out, err)
		}
		res.lost = strings.Contains(out, "lost\n")
		w.done <- res
	}()
	return w
}

// finish stops the writer and applies what it wrote to model. It reports
// whether the writer's final flush failed once with EIO (and then
// succeeded): the volume reported writes acknowledged before a lost
// session to the core's server (docs/remote.md, Failures).
func (w *remoteWriter) finish(t *testing.T, model []byte) (lost bool) {
	t.Helper()
	if err := os.WriteFile(w.stop, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	select {
	case res := <-w.done:
		if res.err != nil {
			t.Fatal(res.err)
		}
		for i := range res.count {
			op := w.ops[i%len(w.ops)]
			copy(model[op[0]:op[0]+op[1]], bytes.Repeat([]byte{byte(1 + i%251)}, op[1]))
		}
		return res.lost
	case <-time.After(60 * time.Second):
		t.Fatal("the writer did not finish")
	}
	return false
}

// TestRemoteCoreServerRestart kills the core's NBD server (qemu-nbd on an
// image file, on a Unix socket for wt, on TCP for wb) with writes in flight through a wt and a wb volume, restarts
// it 1.5 s later, and checks the volume and then the image file against a
// model. In wb, a write made while the server is down is acknowledged at
// once, and every acknowledged write reaches the image once the volume is
// deleted (written back).
func TestRemoteCoreServerRestart(t *testing.T) {
	const size = 32 << 20
	for _, mode := range []string{"wt", "wb"} {
		t.Run(mode, func(t *testing.T) {
			image := filepath.Join(t.TempDir(), "core.img")
			if err := os.WriteFile(image, make([]byte, size), 0o644); err != nil {
				t.Fatal(err)
			}
			// wt over a Unix socket, wb over TCP.
			var srv *remoteServer
			if mode == "wt" {
				srv = qemuNBDUnix(t, image)
			} else {
				srv = qemuNBDTCP(t, image)
			}
			d := StartDaemon(t, DaemonOpts{Bare: true})
			d.Call(t, "bdev_nbd_client_create", map[string]any{"name": "Remote0", "uri": srv.uri})
			uri := d.cacheOver(t, "Vol0", mode, "Cache0", 16, "Remote0")

			model := make([]byte, size)
			w := startRemoteWriter(t, uri, 1, 8<<20)
			time.Sleep(300 * time.Millisecond)
			srv.kill()
			waitFor(t, 10*time.Second, "the client sees the loss", func() bool {
				st, _ := d.nbdClient(t, "Remote0")
				return st.State == "reconnecting"
			})
			if mode == "wb" {
				// Acknowledged by the cache with the core away: it returns
				// while the server is still down (the bound allows for
				// nbdsh's start on a busy machine; the core is down for
				// good until it returns).
				// nbdsh, not qemu-io: qemu flushes at exit, and a flush
				// goes to the core.
				wrote := make(chan string, 1)
				go func() {
					out, err := testutil.RunErr(t, testutil.NbdshEnv(t), "nbdsh", "-u", uri, "-c", fmt.Sprintf("h.pwrite(b'\\xee' * 65536, %d)", 12<<20))
					if err != nil {
						out = fmt.Sprintf("%v: %s", err, out)
					} else {
						out = ""
					}
					wrote <- out
				}()
				select {
				case out := <-wrote:
					if out != "" {
						t.Fatalf("wb write during the outage: %s", out)
					}
				case <-time.After(20 * time.Second):
					t.Fatal("a wb write waits for the missing core")
				}
				copy(model[12<<20:], bytes.Repeat([]byte{0xee}, 64<<10))
			}
			time.Sleep(1500 * time.Millisecond)
			srv.start()
			waitFor(t, 10*time.Second, "the client reconnects", func() bool {
				st, _ := d.nbdClient(t, "Remote0")
				return st.State == "connected" && st.Reconnects >= 1
			})
			// In wt the writer's flush is the first to reach the core
			// after the restart: it reports the writes qemu-nbd
			// acknowledged before its kill without a flush.
			if lost := w.finish(t, model); mode == "wt" && !lost {
				t.Fatal("the first flush after the server's restart succeeded: acknowledged, unflushed writes were not reported")
			}
			if i := testutil.FirstDiff(readExport(t, uri), model); i >= 0 {
				t.Fatalf("the volume differs from the model at %d", i)
			}
			// Deleting the volume writes wb's dirty data back to the core.
			d.Call(t, "bdev_ocf_delete", map[string]any{"name": "Vol0"})
			got, err := os.ReadFile(image)
			if err != nil {
				t.Fatal(err)
			}
			if i := testutil.FirstDiff(got, model); i >= 0 {
				t.Fatalf("the image file differs from the model at %d", i)
			}
		})
	}
}
