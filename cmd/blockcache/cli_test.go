package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"blockcache/internal/daemon"
	"blockcache/internal/rpcclient"
)

// testVersion is the version the test daemons report.
const testVersion = "cli-test-9.8.7"

// testDaemon is a bare daemon running in-process.
type testDaemon struct {
	sock    string
	nbdAddr string // host:port of its NBD server
}

// startDaemon starts a bare daemon on a socket in a fresh directory and
// waits until its socket answers; it is stopped when the test ends.
func startDaemon(t *testing.T) *testDaemon {
	t.Helper()
	// Not t.TempDir: Unix socket paths are limited to 108 bytes.
	dir, err := os.MkdirTemp("", "bc-cli-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "rpc.sock")
	ready := make(chan struct{})
	d, err := daemon.New(daemon.Config{
		RPCSocket: sock,
		Bare:      true,
		NBDListen: "127.0.0.1:0",
		Log:       slog.New(slog.DiscardHandler),
		Version:   testVersion,
		OnReady:   func(*daemon.Daemon) { close(ready) },
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("daemon.Run: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("daemon did not stop")
		}
	})
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("daemon.Run returned before ready: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("daemon not ready after 10s")
	}
	// Ready means listening; make sure the socket answers too.
	c, err := rpcclient.Dial(sock, rpcclient.WithTimeout(5*time.Second), rpcclient.WithConnectRetries(25))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Call("spdk_get_version", nil); err != nil {
		t.Fatal(err)
	}
	return &testDaemon{sock: sock, nbdAddr: d.NBDAddr().String()}
}

// result is what one run of the command printed and returned.
type result struct {
	stdout, stderr string
	code           int
}

// runCLI runs blockcache with args in-process, as main does, with stdin.
func runCLI(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	var out, errb strings.Builder
	code := run(args, strings.NewReader(stdin), &out, &errb)
	return result{out.String(), errb.String(), code}
}

// cli runs a client command against d.
func (d *testDaemon) cli(t *testing.T, args ...string) result {
	t.Helper()
	return runCLI(t, "", append(args, "-s", d.sock)...)
}

// ok runs a client command against d and fails the test unless it exits 0
// and prints nothing to stderr; it returns stdout.
func (d *testDaemon) ok(t *testing.T, args ...string) string {
	t.Helper()
	r := d.cli(t, args...)
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("blockcache %s: exit %d\nstderr: %s\nstdout: %s", strings.Join(args, " "), r.code, r.stderr, r.stdout)
	}
	return r.stdout
}

// fails runs a client command against d, checks that it exits 1 with
// nothing on stdout and a stderr containing every one of want, and returns
// stderr.
func (d *testDaemon) fails(t *testing.T, args []string, want ...string) string {
	t.Helper()
	r := d.cli(t, args...)
	checkFails(t, args, r, want...)
	return r.stderr
}

func checkFails(t *testing.T, args []string, r result, want ...string) {
	t.Helper()
	if r.code != 1 {
		t.Errorf("blockcache %s: exit %d, want 1 (stdout %q, stderr %q)", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	if r.stdout != "" {
		t.Errorf("blockcache %s: stdout %q, want none", strings.Join(args, " "), r.stdout)
	}
	for _, w := range want {
		if !strings.Contains(r.stderr, w) {
			t.Errorf("blockcache %s: stderr %q does not contain %q", strings.Join(args, " "), r.stderr, w)
		}
	}
}

// call calls the daemon directly, bypassing the CLI.
func (d *testDaemon) call(t *testing.T, method string, params any) json.RawMessage {
	t.Helper()
	c, err := rpcclient.Dial(d.sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	res, err := c.Call(method, params)
	if err != nil {
		t.Fatalf("%s: %v", method, err)
	}
	return res
}

// malloc creates a malloc bdev through `blockcache rpc`.
func (d *testDaemon) malloc(t *testing.T, name string, numBlocks, blockSize int) {
	t.Helper()
	params, _ := json.Marshal(map[string]any{"num_blocks": numBlocks, "block_size": blockSize, "name": name})
	if got := d.ok(t, "rpc", "bdev_malloc_create", string(params)); got != name+"\n" {
		t.Fatalf("rpc bdev_malloc_create printed %q, want %q", got, name+"\n")
	}
}

var columnGap = regexp.MustCompile(`\s{2,}`)

// table splits a table's output into rows of cells (columns are separated
// by two or more spaces). The first row is the header.
func table(out string) [][]string {
	var rows [][]string
	for _, line := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
		rows = append(rows, columnGap.Split(strings.TrimSpace(line), -1))
	}
	return rows
}

// row returns the first row of a table whose first cell is key.
func row(t *testing.T, out, key string) []string {
	t.Helper()
	for _, r := range table(out)[1:] {
		if r[0] == key {
			return r
		}
	}
	t.Fatalf("no row %q in\n%s", key, out)
	return nil
}

func checkRow(t *testing.T, out string, want ...string) {
	t.Helper()
	if got := row(t, out, want[0]); !slices.Equal(got, want) {
		t.Errorf("row %q = %q, want %q\nin\n%s", want[0], got, want, out)
	}
}

// checkRowCount checks the number of data rows (the header excluded).
func checkRowCount(t *testing.T, out string, n int) {
	t.Helper()
	if got := len(table(out)) - 1; got != n {
		t.Errorf("%d rows, want %d, in\n%s", got, n, out)
	}
}
