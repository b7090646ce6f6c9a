package e2e

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"blockcache/internal/testutil"
)

// busyReader reads the first 64 KiB of uri over and over in 4 KiB
// requests (hits after the first pass) until the test ends.
func busyReader(t *testing.T, env []string, uri string) {
	t.Helper()
	cmd := exec.Command(testutil.RequireTool(t, "nbdsh"), "-u", uri, "-c", `
import time
end = time.monotonic() + 60
while time.monotonic() < end:
    for i in range(16):
        h.pread(4096, i * 4096)
`)
	cmd.Env = append(cmd.Environ(), env...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
}

// topFields returns the fields of the line of top's table that starts
// with name.
func topFields(out, name string) []string {
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) > 0 && f[0] == name {
			return f
		}
	}
	return nil
}

// TestTopOnce: top --once prints a table with a row per volume: the busy
// one with read IOPS and a full hit ratio, the waiting one as such.
func TestTopOnce(t *testing.T) {
	t.Parallel()
	env := testutil.NbdshEnv(t)
	d := StartDaemon(t, DaemonOpts{Bare: true})
	uri := d.createCachedVolume(t, "Tv", "wt", 16, 64, 4)
	d.Call(t, "bdev_ocf_create", ocfParams("Tw", "wt", "NoCache", "NoCore", 4))
	testutil.Run(t, env, "nbdsh", "-u", uri, "-c", "for i in range(16): h.pread(4096, i * 4096)") // warm
	busyReader(t, env, uri)
	time.Sleep(200 * time.Millisecond)
	out := d.cliOut(t, "top", "--once", "--interval", "700ms", "--sort", "r")
	header := strings.Fields(strings.SplitN(out, "\n", 2)[0])
	if len(header) == 0 || header[0] != "VOLUME" || !strings.Contains(out, "PT BY REASON") || !strings.Contains(out, "HIT%") {
		t.Fatalf("top --once header:\n%s", out)
	}
	f := topFields(out, "Tv")
	if len(f) < 15 || f[1] != "started" {
		t.Fatalf("no started row for Tv:\n%s", out)
	}
	if iops, err := strconv.Atoi(f[2]); err != nil || iops < 50 {
		t.Errorf("Tv read IOPS %q under a busy reader:\n%s", f[2], out)
	}
	if f[3] != "0" || f[6] != "100.0" {
		t.Errorf("Tv: write IOPS %q, hit ratio %q; want 0 and 100.0:\n%s", f[3], f[6], out)
	}
	if f[11] == "-" || !strings.HasPrefix(f[11], "≤") {
		t.Errorf("Tv read p99 %q:\n%s", f[11], out)
	}
	if w := topFields(out, "Tw"); len(w) < 3 || w[1] != "waiting" || w[2] != "-" {
		t.Errorf("waiting volume row %q:\n%s", w, out)
	}
	if i, j := strings.Index(out, "\nTv"), strings.Index(out, "\nTw"); i < 0 || j < i {
		t.Errorf("sorted by read IOPS, Tv is not first:\n%s", out)
	}
	// A bad sort key is refused, naming the keys.
	cmd := exec.Command(binPath, "top", "--once", "--sort", "zz", "-s", d.Sock)
	if b, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(b), "the keys") {
		t.Errorf("top --sort zz: %v\n%s", err, b)
	}
}

// TestTopInTmux drives the live view in a real terminal: the table shows
// the volume, a key re-sorts it, q quits.
func TestTopInTmux(t *testing.T) {
	t.Parallel()
	tmuxPath := testutil.RequireTool(t, "tmux")
	env := testutil.NbdshEnv(t)
	d := StartDaemon(t, DaemonOpts{Bare: true})
	uri := d.createCachedVolume(t, "Xv", "wb", 16, 64, 4)
	busyReader(t, env, uri)

	sock := filepath.Join(shortTempDir(t), "tmux")
	tmux := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(tmuxPath, append([]string{"-S", sock}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("tmux %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	shell := fmt.Sprintf("%s top -s %s --interval 300ms; echo top-exited-$?; sleep 60", binPath, d.Sock)
	tmux("new-session", "-d", "-s", "top", "-x", "200", "-y", "20", shell)
	t.Cleanup(func() { exec.Command(tmuxPath, "-S", sock, "kill-server").Run() })
	screen := func() string { return tmux("capture-pane", "-p", "-t", "top") }
	waitFor := func(what string, ok func(string) bool) string {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for {
			s := screen()
			if ok(s) {
				return s
			}
			if time.Now().After(deadline) {
				t.Fatalf("the terminal never showed %s:\n%s", what, s)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	waitFor("the table with Xv reading", func(s string) bool {
		f := topFields(s, "Xv")
		n, err := 0, error(nil)
		if len(f) > 2 {
			n, err = strconv.Atoi(f[2])
		}
		return strings.Contains(s, "VOLUME*") && err == nil && n > 0
	})
	tmux("send-keys", "-t", "top", "d")
	waitFor("the sort by DIRTY", func(s string) bool {
		return strings.Contains(s, "DIRTY*") && strings.Contains(s, "sorted by DIRTY") && !strings.Contains(s, "VOLUME*")
	})
	tmux("send-keys", "-t", "top", "q")
	waitFor("top exiting with status 0", func(s string) bool { return strings.Contains(s, "top-exited-0") })
}
