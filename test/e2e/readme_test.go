package e2e

// The README's examples, run as a reader would paste them: in order, on one
// fresh daemon on the embedded default.
//
// Markers, in a fenced block's info string:
//
//	```sh run           run on the running daemon, in document order
//	```sh run stopped   run, in order, after the daemon was stopped
//	```text log-after-restart
//	                    lines the daemon logs when started again on the
//	                    same data directory
//
// In a run block, a line "#> TEXT" says TEXT appears in what the block
// printed, after the previous such TEXT. The README's socket
// (/var/tmp/blockcache.sock) and NBD address (127.0.0.1:10809) are replaced
// by the test daemon's; the blocks run in a directory whose
// ./blockcache-data is the daemon's data directory, with
// $BLOCKCACHE_RPC_SOCKET (which the README documents) set for the CLI and a
// rpc.py stand-in on PATH.

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"blockcache/internal/testutil"
)

// The README's defaults, replaced by the test daemon's.
const (
	readmeSocket  = "/var/tmp/blockcache.sock"
	readmeNBDAddr = "127.0.0.1:10809"
)

// readmeBlock is one marked fenced block of the README.
type readmeBlock struct {
	line   int    // of the opening fence
	marker string // the info string after the language
	text   string
	want   []string // the "#> " lines, in order
}

// readmeBlocks returns the README's fenced blocks whose info string is
// lang followed by a marker.
func readmeBlocks(t *testing.T, path string) []readmeBlock {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []readmeBlock
	var cur *readmeBlock
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		switch {
		case cur == nil && strings.HasPrefix(line, "```"):
			info := strings.Fields(strings.TrimPrefix(line, "```"))
			cur = &readmeBlock{line: n}
			if len(info) > 1 {
				cur.marker = info[0] + " " + strings.Join(info[1:], " ")
			}
		case cur != nil && line == "```":
			if cur.marker != "" {
				out = append(out, *cur)
			}
			cur = nil
		case cur != nil:
			cur.text += line + "\n"
			if w, ok := strings.CutPrefix(line, "#> "); ok {
				cur.want = append(cur.want, w)
			}
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if cur != nil {
		t.Fatalf("README.md:%d: fenced block not closed", cur.line)
	}
	return out
}

// rpcPyShim stands in for SPDK's rpc.py: its command line for the methods
// the README calls, sent through `blockcache rpc` (which prints replies as
// rpc.py does). An option or method the README does not use fails loudly.
const rpcPyShim = `#!/bin/sh
set -e
sock=/var/tmp/spdk.sock
if [ "$1" = -s ]; then sock=$2; shift 2; fi
m=$1; shift
case $m in
bdev_malloc_create)
	[ "$1" = -b ] && [ $# -eq 4 ] || { echo "rpc.py stand-in: $m -b NAME MiB BLOCK_SIZE" >&2; exit 2; }
	p=$(printf '{"name":"%s","num_blocks":%d,"block_size":%d}' "$2" $(($3 * 1048576 / $4)) "$4") ;;
bdev_ocf_create)
	[ $# -eq 4 ] || { echo "rpc.py stand-in: $m NAME MODE CACHE CORE" >&2; exit 2; }
	p=$(printf '{"name":"%s","mode":"%s","cache_bdev_name":"%s","core_bdev_name":"%s"}' "$1" "$2" "$3" "$4") ;;
nbd_start_disk)
	p=$(printf '{"bdev_name":"%s"}' "$1") ;;
bdev_ocf_get_stats)
	p=$(printf '{"name":"%s"}' "$1") ;;
*)
	echo "rpc.py stand-in: $m is not a method the README calls" >&2; exit 2 ;;
esac
exec blockcache rpc -s "$sock" "$m" "$p"
`

// TestREADMEExamples runs the README's marked examples in order against a
// real daemon, checks each exits 0 and prints what the README shows, then
// restarts the daemon and checks the warnings the README shows for its
// RAM-backed bdevs.
func TestREADMEExamples(t *testing.T) {
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	readme := filepath.Join(root, "README.md")
	blocks := readmeBlocks(t, readme)
	byMarker := map[string][]readmeBlock{}
	for _, b := range blocks {
		byMarker[b.marker] = append(byMarker[b.marker], b)
	}
	if len(byMarker["sh run"]) < 3 || len(byMarker["sh run stopped"]) == 0 || len(byMarker["text log-after-restart"]) == 0 {
		t.Fatalf("README.md: marked blocks %v; want at least 3 `sh run`, a `sh run stopped` and a `text log-after-restart`", markers(blocks))
	}
	for _, tool := range []string{"bash", "nbdinfo", "jq"} {
		testutil.RequireTool(t, tool)
	}

	work := shortTempDir(t)
	bin := filepath.Join(work, "bin")
	if err := os.Mkdir(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(binPath, filepath.Join(bin, "blockcache")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bin, "rpc.py"), []byte(rpcPyShim), 0o755); err != nil {
		t.Fatal(err)
	}
	dataDir := filepath.Join(work, "blockcache-data")
	d := StartDaemon(t, DaemonOpts{DataDir: dataDir})
	addr := d.NBDAddr
	// "Two commands": the default volume and how to reach it.
	readmeText, err := os.ReadFile(readme)
	if err != nil {
		t.Fatal(err)
	}
	const reach = "nbdinfo nbd://" + readmeNBDAddr + "/cache0"
	if !strings.Contains(string(readmeText), reach) {
		t.Fatalf("README.md no longer shows %q", reach)
	}
	d.waitStdout(t, strings.Replace(reach, readmeNBDAddr, addr, 1))

	env := append(os.Environ(), "PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"),
		"BLOCKCACHE_RPC_SOCKET="+d.Sock, "HOME="+work)
	run := func(b readmeBlock) {
		t.Helper()
		script := strings.NewReplacer(readmeSocket, d.Sock, readmeNBDAddr, addr).Replace(b.text)
		cmd := exec.Command("bash", "-e", "-o", "pipefail", "-c", script)
		cmd.Dir, cmd.Env = work, env
		out, err := testutil.RunCmd(t, cmd)
		if err != nil {
			t.Fatalf("README.md:%d: the block failed: %v\n--- block:\n%s--- output:\n%s", b.line, err, script, out)
		}
		rest := out
		for _, w := range b.want {
			w = strings.ReplaceAll(w, readmeNBDAddr, addr)
			i := strings.Index(rest, w)
			if i < 0 {
				t.Fatalf("README.md:%d: the block's output lacks %q (after the lines before it)\n--- output:\n%s", b.line, w, out)
			}
			rest = rest[i+len(w):]
		}
	}
	for _, b := range byMarker["sh run"] {
		run(b)
	}
	d.Stop(t)
	for _, b := range byMarker["sh run stopped"] {
		run(b)
	}

	// The warnings come before the ready line StartDaemon waits for.
	again := StartDaemon(t, DaemonOpts{DataDir: dataDir})
	log := again.Stderr()
	for _, b := range byMarker["text log-after-restart"] {
		for _, line := range strings.Split(strings.TrimSpace(b.text), "\n") {
			if !strings.Contains(log, line) {
				t.Errorf("README.md:%d: the restarted daemon did not log %q\n--- log:\n%s", b.line, line, log)
			}
		}
	}
	if n := strings.Count(log, "RAM-backed bdev re-created empty"); n != 4 {
		t.Errorf("%d RAM-backed bdev warnings after the restart, want 4 (Malloc0-3):\n%s", n, log)
	}
	for _, w := range []string{"bdev=Malloc2 volumes=Cache2", "bdev=Malloc3 volumes=Cache2"} {
		if !strings.Contains(log, w) {
			t.Errorf("no warning with %q after the restart:\n%s", w, log)
		}
	}
	again.Stop(t)
}

func markers(blocks []readmeBlock) []string {
	var out []string
	for _, b := range blocks {
		out = append(out, fmt.Sprintf("%d:%s", b.line, b.marker))
	}
	return out
}

// TestREADMEDocumentsCLI checks that the README names every command of
// the binary and every flag of `blockcache serve`, as the help lists them.
func TestREADMEDocumentsCLI(t *testing.T) {
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	help := func(args ...string) string {
		out, err := exec.Command(binPath, append(args, "--help")...).CombinedOutput()
		if err != nil {
			t.Fatalf("blockcache %s --help: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}

	_, cmds, ok := strings.Cut(help(), "Available Commands:\n")
	cmds, _, _ = strings.Cut(cmds, "\n\n")
	if !ok {
		t.Fatal("blockcache --help lists no commands")
	}
	n := 0
	for _, line := range strings.Split(cmds, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] == "help" || f[0] == "completion" {
			continue
		}
		n++
		if !strings.Contains(readme, "`blockcache "+f[0]+" ") && !strings.Contains(readme, "`blockcache "+f[0]+"`") {
			t.Errorf("README.md has no `blockcache %s` in its command tables", f[0])
		}
	}
	if n < 10 {
		t.Fatalf("found %d commands in blockcache --help:\n%s", n, cmds)
	}

	flags := regexp.MustCompile(`(?m)^\s+(?:-[a-z], )?--([a-z0-9-]+)`).FindAllStringSubmatch(help("serve"), -1)
	if len(flags) < 20 {
		t.Fatalf("found %d flags in blockcache serve --help", len(flags))
	}
	for _, f := range flags {
		if f[1] == "help" {
			continue
		}
		if !regexp.MustCompile("`(?:-[a-z], )?--" + regexp.QuoteMeta(f[1]) + "[ `=]").MatchString(readme) {
			t.Errorf("README.md's serve flags do not list --%s", f[1])
		}
	}
}
