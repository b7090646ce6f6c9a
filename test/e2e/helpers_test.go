// Package e2e drives the real blockcache binary as a separate process: it
// is built once by TestMain, started with `blockcache serve` on temporary
// sockets and directories, managed over its JSON-RPC socket with
// internal/rpcclient (the stand-in for SPDK's rpc.py), and exercised with
// real NBD clients (qemu-img, qemu-io, nbdinfo, nbdcopy, nbdsh, fio). The
// clients are Debian packages that `make deps` installs; a missing one
// fails the test rather than skipping it.
package e2e

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"blockcache/internal/invariants"
	"blockcache/internal/jsonrpc"
	"blockcache/internal/rpcclient"
	"blockcache/internal/testutil"
)

// binPath is the blockcache binary TestMain built (with the invariants tag
// when the test has it or -race, and with the race detector when
// BLOCKCACHE_E2E_RACE is set).
var binPath string

func TestMain(m *testing.M) {
	os.Exit(buildAndRun(m))
}

func buildAndRun(m *testing.M) int {
	dir, err := os.MkdirTemp("", "blockcache-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	root, err := moduleRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e: the go command is not on PATH; it is needed to build blockcache:", err)
		return 1
	}
	binPath = filepath.Join(dir, "blockcache")
	args := []string{"build", "-o", binPath}
	if invariants.Enabled {
		// The test runs with the invariants tag (or -race, as make test
		// does): so does the daemon, self-checks and rare paths included.
		args = append(args, "-tags", "invariants")
	}
	if os.Getenv("BLOCKCACHE_E2E_RACE") != "" {
		// A daemon built with the race detector exits with status 66 when
		// it found a race, which Stop reports.
		args = append(args, "-race")
	}
	build := exec.Command(goTool, append(args, "./cmd/blockcache")...)
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: building blockcache (go build -o %s ./cmd/blockcache in %s) failed: %v\n%s", binPath, root, err, out)
		return 1
	}
	return m.Run()
}

// moduleRoot finds the directory holding go.mod above the working directory.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the test's working directory")
		}
		dir = parent
	}
}

// shortTempDir returns a fresh directory with a short path: Unix socket
// paths are limited to 107 bytes, and t.TempDir() names can exceed that.
func shortTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "bce2e")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// lineLog collects a stream's output and lets callers wait for a line.
type lineLog struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	partial []byte
	lines   []string
	changed chan struct{} // closed and replaced on every new line
}

func newLineLog() *lineLog { return &lineLog{changed: make(chan struct{})} }

func (l *lineLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.Write(p)
	l.partial = append(l.partial, p...)
	added := false
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			break
		}
		l.lines = append(l.lines, string(l.partial[:i]))
		l.partial = l.partial[i+1:]
		added = true
	}
	if added {
		close(l.changed)
		l.changed = make(chan struct{})
	}
	return len(p), nil
}

func (l *lineLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// find returns the first line containing s, and a channel closed when more
// lines arrive.
func (l *lineLog) find(s string) (string, bool, <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, line := range l.lines {
		if strings.Contains(line, s) {
			return line, true, nil
		}
	}
	return "", false, l.changed
}

// errExited says the process ended before it wrote the line waited for.
var errExited = errors.New("exited")

// wait waits up to timeout for a line containing s and returns it; it
// fails early, with errExited, once exited is closed (nil: never) and no
// such line came.
func (l *lineLog) wait(s string, timeout time.Duration, exited <-chan struct{}) (string, error) {
	deadline := time.After(timeout)
	for {
		line, ok, more := l.find(s)
		if ok {
			return line, nil
		}
		select {
		case <-more:
		case <-exited:
			if line, ok, _ := l.find(s); ok {
				return line, nil
			}
			return "", errExited
		case <-deadline:
			return "", fmt.Errorf("no line containing %q after %v", s, timeout)
		}
	}
}

// DaemonOpts say how to start blockcache serve.
type DaemonOpts struct {
	// Bare starts with --bare.
	Bare bool
	// Config, if set, is passed as --config.
	Config string
	// DataDir is --data-dir; a fresh temporary directory if empty.
	DataDir string
	// Sock is the -r socket path; a fresh temporary one if empty.
	Sock string
	// NBDListen is --nbd-listen, 127.0.0.1:0 if empty; "none" for none.
	NBDListen string
	// Args are extra arguments.
	Args []string
	// Shell, if set, is shell code run before the daemon is exec'd from
	// sh -c, e.g. "umask 000;".
	Shell string
}

// Daemon is a running `blockcache serve` process.
type Daemon struct {
	t       *testing.T
	Sock    string
	DataDir string
	// NBDAddr is the NBD server's host:port, parsed from the ready line;
	// empty when it listens on no TCP address.
	NBDAddr string

	cmd    *exec.Cmd
	stdout *lineLog
	stderr *lineLog
	exited chan struct{}
	// waitErr is cmd.Wait's result, set before exited is closed.
	waitErr error

	clientMu sync.Mutex
	client   *rpcclient.Client
	// called records the methods called through Call and CallErr.
	called map[string]bool
}

// StartDaemon starts blockcache serve with an NBD server on a free port
// and waits until it says it is ready. The process is killed at cleanup if
// the test did not stop it.
func StartDaemon(t *testing.T, o DaemonOpts) *Daemon {
	t.Helper()
	d := startProcess(t, o)
	if err := d.waitReady(30 * time.Second); err != nil {
		t.Fatalf("blockcache did not become ready: %v\nstderr:\n%s", err, d.Stderr())
	}
	return d
}

// startProcess starts blockcache serve without waiting for it.
func startProcess(t *testing.T, o DaemonOpts) *Daemon {
	t.Helper()
	if o.Sock == "" {
		o.Sock = filepath.Join(shortTempDir(t), "rpc.sock")
	}
	if o.DataDir == "" {
		o.DataDir = filepath.Join(t.TempDir(), "data")
	}
	switch o.NBDListen {
	case "":
		o.NBDListen = "127.0.0.1:0"
	case "none":
		o.NBDListen = ""
	}
	args := []string{"serve", "-r", o.Sock, "--nbd-listen=" + o.NBDListen, "--data-dir", o.DataDir}
	if o.Bare {
		args = append(args, "--bare")
	}
	if o.Config != "" {
		args = append(args, "--config", o.Config)
	}
	args = append(args, o.Args...)
	d := &Daemon{t: t, Sock: o.Sock, DataDir: o.DataDir, stdout: newLineLog(), stderr: newLineLog(),
		exited: make(chan struct{}), called: map[string]bool{}}
	d.cmd = exec.Command(binPath, args...)
	if o.Shell != "" {
		d.cmd = exec.Command("sh", append([]string{"-c", o.Shell + ` exec "$0" "$@"`, binPath}, args...)...)
	}
	d.cmd.Dir = t.TempDir()
	d.cmd.Stdout, d.cmd.Stderr = d.stdout, d.stderr
	if err := d.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", binPath, err)
	}
	go func() {
		d.waitErr = d.cmd.Wait()
		close(d.exited)
	}()
	t.Cleanup(func() {
		d.closeClient()
		select {
		case <-d.exited:
		default:
			d.cmd.Process.Kill()
			<-d.exited
		}
		if t.Failed() {
			t.Logf("blockcache %s stderr:\n%s", strings.Join(args, " "), d.Stderr())
		}
	})
	return d
}

// waitReady waits for the "blockcache ready" log line and takes the NBD
// address from it.
func (d *Daemon) waitReady(timeout time.Duration) error {
	line, err := d.stderr.wait("blockcache ready", timeout, d.exited)
	if errors.Is(err, errExited) {
		return fmt.Errorf("exited before it was ready: %v", d.waitErr)
	}
	if err != nil {
		return err
	}
	_, after, found := strings.Cut(line, " nbd=")
	if !found {
		return fmt.Errorf("no nbd= address in the ready line %q", line)
	}
	uri, _, _ := strings.Cut(after, " ")
	uri = strings.Replace(uri, "nbds://", "nbd://", 1) // serve --tls=require
	if addr, ok := strings.CutPrefix(uri, "nbd://"); ok {
		d.NBDAddr = strings.TrimSuffix(addr, "/")
	}
	return nil
}

// Stderr returns what the daemon logged so far.
func (d *Daemon) Stderr() string { return d.stderr.String() }

// Stdout returns what the daemon printed so far.
func (d *Daemon) Stdout() string { return d.stdout.String() }

// waitStdout waits for a stdout line containing s and returns it.
func (d *Daemon) waitStdout(t *testing.T, s string) string {
	t.Helper()
	line, err := d.stdout.wait(s, 10*time.Second, nil)
	if err != nil {
		t.Fatalf("blockcache printed no line containing %q (%v); stdout:\n%s", s, err, d.Stdout())
	}
	return line
}

// URI is the NBD URI of an export.
func (d *Daemon) URI(export string) string { return "nbd://" + d.NBDAddr + "/" + export }

// Wait waits for the process to exit and returns its exit code.
func (d *Daemon) Wait(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-d.exited:
	case <-time.After(timeout):
		t.Fatalf("blockcache did not exit within %v\nstderr:\n%s", timeout, d.Stderr())
	}
	var ee *exec.ExitError
	switch {
	case d.waitErr == nil:
		return 0
	case errors.As(d.waitErr, &ee):
		return ee.ExitCode()
	default:
		t.Fatalf("waiting for blockcache: %v", d.waitErr)
		return -1
	}
}

// Stop sends SIGTERM and expects a clean exit with status 0.
func (d *Daemon) Stop(t *testing.T) {
	t.Helper()
	d.closeClient()
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM: %v", err)
	}
	if code := d.Wait(t, 60*time.Second); code != 0 {
		t.Fatalf("blockcache exited with status %d after SIGTERM, want 0\nstderr:\n%s", code, d.Stderr())
	}
	if !strings.Contains(d.Stderr(), "shutdown complete") {
		t.Fatalf("no \"shutdown complete\" after SIGTERM:\n%s", d.Stderr())
	}
}

// Kill sends SIGKILL and waits for the process to go.
func (d *Daemon) Kill(t *testing.T) {
	t.Helper()
	d.closeClient()
	d.cmd.Process.Kill()
	d.Wait(t, 10*time.Second)
}

// Client returns the daemon's shared rpc.py-like client.
func (d *Daemon) Client(t *testing.T) *rpcclient.Client {
	t.Helper()
	d.clientMu.Lock()
	defer d.clientMu.Unlock()
	if d.client == nil {
		// Not closed at t's cleanup (t may be a subtest): the daemon's
		// cleanup closes it.
		c, err := d.dial()
		if err != nil {
			t.Fatal(err)
		}
		d.client = c
	}
	return d.client
}

func (d *Daemon) dial() (*rpcclient.Client, error) {
	return rpcclient.Dial(d.Sock, rpcclient.WithTimeout(30*time.Second), rpcclient.WithConnectRetries(10))
}

// Dial opens another client connection, closed at t's cleanup.
func (d *Daemon) Dial(t *testing.T) *rpcclient.Client {
	t.Helper()
	c, err := d.dial()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// markCalled records that a method was exercised.
func (d *Daemon) markCalled(method string) {
	d.clientMu.Lock()
	defer d.clientMu.Unlock()
	d.called[method] = true
}

func (d *Daemon) wasCalled(method string) bool {
	d.clientMu.Lock()
	defer d.clientMu.Unlock()
	return d.called[method]
}

func (d *Daemon) closeClient() {
	d.clientMu.Lock()
	defer d.clientMu.Unlock()
	if d.client != nil {
		d.client.Close()
		d.client = nil
	}
}

// Call calls a method and fails the test on any error.
func (d *Daemon) Call(t *testing.T, method string, params any) json.RawMessage {
	t.Helper()
	d.markCalled(method)
	res, err := d.Client(t).Call(method, params)
	if err != nil {
		t.Fatalf("%s %s: %v", method, mustJSON(params), err)
	}
	return res
}

// CallInto calls a method and decodes its result into out.
func (d *Daemon) CallInto(t *testing.T, method string, params, out any) {
	t.Helper()
	res := d.Call(t, method, params)
	if err := json.Unmarshal(res, out); err != nil {
		t.Fatalf("%s: decoding result %s: %v", method, res, err)
	}
}

// CallErr calls a method that must fail with an error reply and returns it.
func (d *Daemon) CallErr(t *testing.T, method string, params any) *jsonrpc.Error {
	t.Helper()
	d.markCalled(method)
	res, err := d.Client(t).Call(method, params)
	return replyError(t, method, params, res, err)
}

func replyError(t *testing.T, method string, params any, res json.RawMessage, err error) *jsonrpc.Error {
	t.Helper()
	if err == nil {
		t.Fatalf("%s %s succeeded with %s, want an error reply", method, mustJSON(params), res)
	}
	var je *jsonrpc.Error
	if !errors.As(err, &je) {
		t.Fatalf("%s %s: %v, want an error reply", method, mustJSON(params), err)
	}
	return je
}

// expectError calls method and checks the error reply's code and message.
func (d *Daemon) expectError(t *testing.T, method string, params any, code int, message string) *jsonrpc.Error {
	t.Helper()
	je := d.CallErr(t, method, params)
	if je.Code != code || je.Message != message {
		t.Fatalf("%s %s: got error {%d, %q} (data %q), want {%d, %q}", method, mustJSON(params), je.Code, je.Message, je.Data, code, message)
	}
	return je
}

func mustJSON(v any) string {
	if v == nil {
		return "{}"
	}
	if r, ok := v.(json.RawMessage); ok {
		return string(r)
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprintf("%v", v)
	}
	return string(b)
}

// mallocParams are what rpc.py sends for `bdev_malloc_create -b NAME MiB BS`.
func mallocParams(name string, mib, blockSize int) map[string]any {
	return map[string]any{"name": name, "num_blocks": mib << 20 / blockSize, "block_size": blockSize,
		"md_interleave": false, "dif_is_head_of_md": false}
}

// aioParams are what rpc.py sends for `bdev_aio_create FILE NAME`.
func aioParams(file, name string) map[string]any {
	return map[string]any{"filename": file, "name": name, "readonly": false, "fallocate": false, "nowait": false}
}

// ocfParams are what rpc.py sends for `bdev_ocf_create NAME MODE CACHE CORE`
// with --cache-line-size when lineKiB is not 0.
func ocfParams(name, mode, cache, core string, lineKiB int) map[string]any {
	p := map[string]any{"name": name, "mode": mode, "cache_bdev_name": cache, "core_bdev_name": core}
	if lineKiB != 0 {
		p["cache_line_size"] = lineKiB
	}
	return p
}

// delayParams are what rpc.py sends for `bdev_delay_create -b BASE -d NAME`
// with reads taking readUS and writes writeUS, on average and at p99.
func delayParams(base, name string, readUS, writeUS int) map[string]any {
	return map[string]any{"base_bdev_name": base, "name": name,
		"avg_read_latency": readUS, "p99_read_latency": readUS, "avg_write_latency": writeUS, "p99_write_latency": writeUS}
}

// createCachedVolume creates two malloc bdevs, name_cache and name_core,
// and an OCF vbdev on them, and exports it over NBD; it returns the
// export's URI.
func (d *Daemon) createCachedVolume(t *testing.T, name, mode string, cacheMiB, coreMiB, lineKiB int) string {
	t.Helper()
	d.Call(t, "bdev_malloc_create", mallocParams(name+"_cache", cacheMiB, 512))
	d.Call(t, "bdev_malloc_create", mallocParams(name+"_core", coreMiB, 512))
	return d.cacheAndExport(t, name, mode, name+"_core", lineKiB)
}

// createSlowCoreVolume is createCachedVolume with the core behind a delay
// bdev, name_slow, whose reads take readUS and writes writeUS.
func (d *Daemon) createSlowCoreVolume(t *testing.T, name, mode string, cacheMiB, coreMiB, lineKiB, readUS, writeUS int) string {
	t.Helper()
	d.Call(t, "bdev_malloc_create", mallocParams(name+"_cache", cacheMiB, 512))
	d.Call(t, "bdev_malloc_create", mallocParams(name+"_core", coreMiB, 512))
	d.Call(t, "bdev_delay_create", delayParams(name+"_core", name+"_slow", readUS, writeUS))
	return d.cacheAndExport(t, name, mode, name+"_slow", lineKiB)
}

// cacheAndExport creates the OCF vbdev name on name_cache and core and
// exports it; it returns the export's URI.
func (d *Daemon) cacheAndExport(t *testing.T, name, mode, core string, lineKiB int) string {
	t.Helper()
	d.Call(t, "bdev_ocf_create", ocfParams(name, mode, name+"_cache", core, lineKiB))
	var uri string
	d.CallInto(t, "nbd_start_disk", map[string]any{"bdev_name": name}, &uri)
	if uri != d.URI(name) {
		t.Fatalf("nbd_start_disk %s returned %q, want %q", name, uri, d.URI(name))
	}
	return uri
}

// cacheOver creates cache, a RAM bdev of cacheMiB, and the OCF volume vol
// in mode over the existing bdev core, and exports vol; it returns what
// nbd_start_disk returned, the export's URI.
func (d *Daemon) cacheOver(t *testing.T, vol, mode, cache string, cacheMiB int, core string) string {
	t.Helper()
	d.Call(t, "bdev_malloc_create", mallocParams(cache, cacheMiB, 512))
	d.Call(t, "bdev_ocf_create", ocfParams(vol, mode, cache, core, 0))
	var uri string
	d.CallInto(t, "nbd_start_disk", map[string]any{"bdev_name": vol}, &uri)
	return uri
}

// expectSameImage checks with qemu-img compare that the raw image (file or
// NBD URI) b holds what the raw image a does; what names the check.
func expectSameImage(t *testing.T, what, a, b string) {
	t.Helper()
	if out := testutil.Run(t, nil, "qemu-img", "compare", "-f", "raw", "-F", "raw", a, b); !strings.Contains(out, "Images are identical") {
		t.Fatalf("%s: %s", what, out)
	}
}

// randomBytes returns n bytes from a seeded generator.
func randomBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		v := r.Uint64()
		for j := range 8 {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return b
}

// writeFile writes data to a new file in dir and returns its path.
func writeFile(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// configDoc is an SPDK JSON config (config.json, save_config's output)
// with its entries left raw.
type configDoc struct {
	Subsystems []struct {
		Subsystem string            `json:"subsystem"`
		Config    []json.RawMessage `json:"config"`
	} `json:"subsystems"`
}

// readConfig reads the SPDK JSON config at path.
func readConfig(t *testing.T, path string) configDoc {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var doc configDoc
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatalf("%s: %v\n%s", path, err, b)
	}
	return doc
}

// writeConfig writes doc to path.
func writeConfig(t *testing.T, path string, doc configDoc) {
	t.Helper()
	b, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// bdevInfo is an element of bdev_get_bdevs.
type bdevInfo struct {
	Name             string          `json:"name"`
	Aliases          []string        `json:"aliases"`
	ProductName      string          `json:"product_name"`
	BlockSize        uint32          `json:"block_size"`
	NumBlocks        uint64          `json:"num_blocks"`
	UUID             string          `json:"uuid"`
	Claimed          bool            `json:"claimed"`
	ClaimType        string          `json:"claim_type"`
	SupportedIOTypes map[string]bool `json:"supported_io_types"`
	DriverSpecific   json.RawMessage `json:"driver_specific"`
}

// ocfDriverSpecific is an OCF vbdev's driver_specific object.
type ocfDriverSpecific struct {
	CacheDevice      string `json:"cache_device"`
	CoreDevice       string `json:"core_device"`
	Mode             string `json:"mode"`
	CacheLineSize    uint64 `json:"cache_line_size"`
	MetadataVolatile bool   `json:"metadata_volatile"`
}

// nbdDisk is an element of nbd_get_disks.
type nbdDisk struct {
	NBDDevice string `json:"nbd_device"`
	BdevName  string `json:"bdev_name"`
}
