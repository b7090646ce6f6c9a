package e2e

// NBD allow-lists (client source addresses, Unix socket peers) and
// read-only exports, with real clients against the real daemon.

import (
	"bytes"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"blockcache/internal/nbd/nbdclient"
	"blockcache/internal/testutil"
)

// dialFrom negotiates export "Disk" from the source address from, or says
// why it could not.
func dialFrom(t *testing.T, from, addr string) (*nbdclient.Client, error) {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial from %s: %v", from, err)
	}
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	c, err := nbdclient.Negotiate(nc, nbdclient.Options{Export: "Disk", StructuredReplies: true})
	if err != nil {
		nc.Close()
		return nil, err
	}
	nc.SetDeadline(time.Time{})
	t.Cleanup(func() { c.Close() })
	return c, nil
}

func TestNBDAllowList(t *testing.T) {
	t.Parallel()
	sock := filepath.Join(shortTempDir(t), "nbd.sock")
	d := StartDaemon(t, DaemonOpts{Bare: true, Args: []string{
		"--nbd-allow", "127.0.0.2", "--nbd-allow=10.0.0.0/8,::1",
		"--nbd-socket", sock}})
	d.Call(t, "bdev_malloc_create", mallocParams("Disk", 4, 512))
	d.Call(t, "nbd_start_disk", map[string]any{"bdev_name": "Disk"})

	c, err := dialFrom(t, "127.0.0.2", d.NBDAddr)
	if err != nil {
		t.Fatalf("client from 127.0.0.2 (allowed): %v", err)
	}
	if err := c.ReadAt(make([]byte, 4096), 0); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := dialFrom(t, "127.0.0.3", d.NBDAddr); err == nil {
			t.Fatal("client from 127.0.0.3 (not allowed) negotiated")
		}
	}
	// A real client, from 127.0.0.1: refused before the greeting.
	mustFail(t, "client from 127.0.0.1", "nbdinfo", d.URI("Disk"))
	// nbdsh on a socket it bound to 127.0.0.2 itself.
	host, port, _ := net.SplitHostPort(d.NBDAddr)
	script := `import socket
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.bind(("127.0.0.2", 0))
s.connect(("` + host + `", ` + port + `))
h.set_export_name("Disk")
h.connect_socket(s.fileno())
print("size", h.get_size())
`
	if out := testutil.Run(t, testutil.NbdshEnv(t), "nbdsh", "-c", script); !strings.Contains(out, "size 4194304") {
		t.Fatalf("nbdsh from 127.0.0.2:\n%s", out)
	}
	// Refusals are logged, at most one per 10 s: the first of the four.
	if n := strings.Count(d.Stderr(), `msg="nbd connection refused" remote=127.0.0.3`); n != 1 {
		t.Fatalf("%d refusals of 127.0.0.3 logged, want 1 (rate-limited):\n%s", n, d.Stderr())
	}
	if !strings.Contains(d.Stderr(), "client not in the allow-list: 127.0.0.3") {
		t.Fatalf("refusal reason not logged:\n%s", d.Stderr())
	}

}

// TestNBDAllowUID: --nbd-allow-uid admits the Unix socket clients of those
// users only, whatever the socket's mode (0666 here).
func TestNBDAllowUID(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		uid              string
		rootOK, nobodyOK bool
	}{{"0", true, false}, {"65534", false, true}} {
		dir := shortTempDir(t)
		if err := os.Chmod(dir, 0o755); err != nil { // nobody may reach the socket
			t.Fatal(err)
		}
		sock := filepath.Join(dir, "nbd.sock")
		d := StartDaemon(t, DaemonOpts{Bare: true, NBDListen: "none", Args: []string{
			"--nbd-socket", sock, "--nbd-socket-mode", "0666", "--nbd-allow-uid", tc.uid}})
		d.Call(t, "bdev_malloc_create", mallocParams("Disk", 4, 512))
		d.Call(t, "nbd_start_disk", map[string]any{"bdev_name": "Disk"})
		uri := "nbd+unix:///Disk?socket=" + sock
		out, err := testutil.RunErr(t, nil, "nbdinfo", "--size", uri)
		if (err == nil) != tc.rootOK {
			t.Errorf("--nbd-allow-uid %s: nbdinfo as root: %v\n%s", tc.uid, err, out)
		}
		out, err = runAs(t, nobody, nobodyHome(t, nil), "nbdinfo", "--size", uri)
		if (err == nil) != tc.nobodyOK || strings.Contains(out, "Permission denied") {
			t.Errorf("--nbd-allow-uid %s: nbdinfo as nobody: %v\n%s", tc.uid, err, out)
		}
		refused := "uid 65534 gid 65534"
		if !tc.rootOK {
			refused = "uid 0 gid 0"
		}
		// The refusal is logged after the close the client sees: wait.
		waitLogLine(t, d, "client not in the allow-list: "+refused, 10*time.Second)
	}
}

func TestReadOnlyExport(t *testing.T) {
	t.Parallel()
	d := StartDaemon(t, DaemonOpts{Bare: true})
	d.Call(t, "bdev_malloc_create", mallocParams("Golden", 4, 512))
	d.Call(t, "bdev_malloc_create", mallocParams("Scratch", 4, 512))
	pattern := bytes.Repeat([]byte{0xa5}, 4096)
	// Fill Golden through a writable export first, then export it read-only.
	d.Call(t, "nbd_start_disk", map[string]any{"bdev_name": "Golden"})
	testutil.Run(t, nil, "qemu-io", "-f", "raw", "-c", "write -P 0xa5 0 4096", d.URI("Golden"))
	d.Call(t, "nbd_stop_disk", map[string]any{"nbd_device": d.URI("Golden")})
	out := testutil.Run(t, nil, binPath, "export", "start", "Golden", "--read-only", "-s", d.Sock)
	if strings.TrimSpace(out) != d.URI("Golden") {
		t.Fatalf("export start --read-only printed %q", out)
	}
	d.Call(t, "nbd_start_disk", map[string]any{"bdev_name": "Scratch"})

	var info struct {
		Exports []struct {
			ReadOnly bool `json:"is_read_only"`
		} `json:"exports"`
	}
	if err := json.Unmarshal([]byte(testutil.Run(t, nil, "nbdinfo", "--json", d.URI("Golden"))), &info); err != nil ||
		len(info.Exports) != 1 || !info.Exports[0].ReadOnly {
		t.Fatalf("nbdinfo: read-only not advertised: %+v %v", info, err)
	}
	// qemu-io honours the flag; reading works.
	mustFail(t, "qemu-io write to a read-only export", "qemu-io", "-f", "raw", "-c", "write -P 0 0 4096", d.URI("Golden"))
	testutil.Run(t, nil, "qemu-io", "-r", "-f", "raw", "-c", "read -P 0xa5 0 4096", d.URI("Golden"))

	// A client that ignores the flag gets EPERM for every kind of write.
	host := d.NBDAddr
	c, err := nbdclient.Dial("tcp", host, nbdclient.Options{Export: "Golden", StructuredReplies: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.Export.Flags&nbdclient.FlagReadOnly == 0 {
		t.Fatalf("flags %#x lack NBD_FLAG_READ_ONLY", c.Export.Flags)
	}
	for what, err := range map[string]error{
		"write":        c.WriteAt(make([]byte, 4096), 0, 0),
		"write FUA":    c.WriteAt(make([]byte, 512), 512, nbdclient.CmdFlagFUA),
		"trim":         c.Trim(0, 4096, 0),
		"write-zeroes": c.WriteZeroes(0, 4096, 0),
	} {
		if !errors.Is(err, syscall.EPERM) {
			t.Errorf("%s on a read-only export: %v, want EPERM", what, err)
		}
	}
	got := make([]byte, 4096)
	if err := c.ReadAt(got, 0); err != nil || !bytes.Equal(got, pattern) {
		t.Fatalf("read-only export changed (%v)", err)
	}

	// save_config writes readonly only where it is true.
	saved, err := d.Client(t).SaveConfig()
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Subsystems []struct {
			Subsystem string
			Config    []struct {
				Method string
				Params map[string]any
			}
		}
	}
	if err := json.Unmarshal(saved, &doc); err != nil {
		t.Fatal(err)
	}
	seen := map[string]any{}
	for _, ss := range doc.Subsystems {
		for _, m := range ss.Config {
			if m.Method == "nbd_start_disk" {
				seen[m.Params["bdev_name"].(string)] = m.Params["readonly"]
			}
		}
	}
	if seen["Golden"] != true || seen["Scratch"] != nil || len(seen) != 2 {
		t.Fatalf("save_config's nbd_start_disk readonly params: %v\n%s", seen, saved)
	}
}

// TestReadOnlyExportSurvivesRestart: the persisted config keeps readonly.
func TestReadOnlyExportSurvivesRestart(t *testing.T) {
	t.Parallel()
	o := DaemonOpts{DataDir: filepath.Join(t.TempDir(), "data")}
	d := StartDaemon(t, o)
	d.Call(t, "bdev_malloc_create", mallocParams("Golden", 4, 512))
	d.Call(t, "nbd_start_disk", map[string]any{"bdev_name": "Golden", "readonly": true})
	d.Stop(t)
	o.Sock = d.Sock
	d = StartDaemon(t, o)
	c, err := nbdclient.Dial("tcp", d.NBDAddr, nbdclient.Options{Export: "Golden"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.Export.Flags&nbdclient.FlagReadOnly == 0 {
		t.Fatalf("after restart the export is not read-only: flags %#x", c.Export.Flags)
	}
	if err := c.WriteAt(make([]byte, 512), 0, 0); !errors.Is(err, syscall.EPERM) {
		t.Fatalf("write after restart: %v, want EPERM", err)
	}
	d.Stop(t)
}
