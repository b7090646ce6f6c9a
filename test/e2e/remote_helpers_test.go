package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"blockcache/internal/testutil"
)

// remoteServer is an NBD server process the NBD client bdev connects to:
// nbdkit or qemu-nbd, restartable with the same arguments (its data
// survives when the plugin or image keeps it).
type remoteServer struct {
	t    *testing.T
	name string
	args []string
	wrap []string // a prefix such as ip netns exec NS
	// uri is what bdev_nbd_client_create is given.
	uri  string
	addr string // host:port, or the socket path
	unix bool
	cmd  *exec.Cmd
	out  bytes.Buffer
}

// startRemote starts name (nbdkit or qemu-nbd) with args and waits until
// it accepts connections on addr.
func startRemote(t *testing.T, wrap []string, name, uri, addr string, unix bool, args ...string) *remoteServer {
	t.Helper()
	testutil.RequireTool(t, name)
	s := &remoteServer{t: t, name: name, args: args, wrap: wrap, uri: uri, addr: addr, unix: unix}
	s.start()
	t.Cleanup(s.stop)
	return s
}

func (s *remoteServer) start() {
	s.t.Helper()
	argv := append(append(append([]string(nil), s.wrap...), s.name), s.args...)
	s.cmd = exec.Command(argv[0], argv[1:]...)
	s.out.Reset()
	s.cmd.Stdout, s.cmd.Stderr = &s.out, &s.out
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := s.cmd.Start(); err != nil {
		s.t.Fatalf("start %s: %v", strings.Join(argv, " "), err)
	}
	network := "tcp"
	if s.unix {
		network = "unix"
	}
	for end := time.Now().Add(15 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		c, err := net.DialTimeout(network, s.addr, time.Second)
		if err == nil {
			// qemu-nbd serves one client at a time unless -e; the probe
			// must not hold a slot.
			c.Close()
			return
		}
		if time.Now().After(end) {
			s.t.Fatalf("%s did not listen on %s: %v\n%s", strings.Join(argv, " "), s.addr, err, s.out.String())
		}
	}
}

// kill kills the server's process group with SIGKILL and waits for it.
func (s *remoteServer) kill() {
	if s.cmd == nil {
		return
	}
	syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
	s.cmd.Wait()
	s.cmd = nil
	if s.unix {
		os.Remove(s.addr)
	}
}

func (s *remoteServer) stop() { s.kill() }

// freeTCPPort returns a port on 127.0.0.1 nobody listens on now.
func freeTCPPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// nbdkitUnix starts nbdkit on a fresh Unix socket with the given
// filters, plugin and parameters.
func nbdkitUnix(t *testing.T, args ...string) *remoteServer {
	t.Helper()
	sock := filepath.Join(shortTempDir(t), "nbdkit.sock")
	return startRemote(t, nil, "nbdkit", "nbd+unix:///?socket="+sock, sock, true,
		append([]string{"-f", "-U", sock}, args...)...)
}

// nbdkitTCP starts nbdkit on a free loopback port.
func nbdkitTCP(t *testing.T, args ...string) *remoteServer {
	t.Helper()
	port := freeTCPPort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	return startRemote(t, nil, "nbdkit", "nbd://"+addr+"/", addr, false,
		append([]string{"-f", "-i", "127.0.0.1", "-p", fmt.Sprint(port)}, args...)...)
}

// qemuNBDUnix serves the raw image file on a fresh Unix socket as the
// export "disk", persistently (-t), to several clients (-e).
func qemuNBDUnix(t *testing.T, image string) *remoteServer {
	t.Helper()
	sock := filepath.Join(shortTempDir(t), "qemu-nbd.sock")
	return startRemote(t, nil, "qemu-nbd", "nbd+unix:///disk?socket="+sock, sock, true,
		"-f", "raw", "-t", "-e", "8", "-x", "disk", "--cache=writeback", "-k", sock, image)
}

// qemuNBDTCP is qemuNBDUnix on a free loopback port.
func qemuNBDTCP(t *testing.T, image string) *remoteServer {
	t.Helper()
	port := freeTCPPort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	return startRemote(t, nil, "qemu-nbd", "nbd://"+addr+"/disk", addr, false,
		"-f", "raw", "-t", "-e", "8", "-x", "disk", "--cache=writeback", "-b", "127.0.0.1", "-p", fmt.Sprint(port), image)
}

// nbdClientStatus is driver_specific.nbd_client of bdev_get_bdevs.
type nbdClientStatus struct {
	URI             string `json:"uri"`
	Export          string `json:"export"`
	State           string `json:"state"`
	Reconnects      uint64 `json:"reconnects"`
	LastError       string `json:"last_error"`
	Connections     int    `json:"connections"`
	OpenConnections int    `json:"open_connections"`
	Flush           bool   `json:"flush"`
	MultiConn       bool   `json:"multi_conn"`
	CtrlrLoss       int    `json:"ctrlr_loss_timeout_sec"`
	FastIOFail      int    `json:"fast_io_fail_timeout_sec"`
	ReconnectDelay  int    `json:"reconnect_delay_sec"`
	IOTimeout       int    `json:"io_timeout_sec"`
}

// nbdClient returns the NBD client bdev name's status; ok is false when
// no bdev has that name.
func (d *Daemon) nbdClient(t *testing.T, name string) (st nbdClientStatus, ok bool) {
	t.Helper()
	res, err := d.Client(t).Call("bdev_get_bdevs", map[string]any{"name": name})
	if err != nil {
		return st, false
	}
	var bdevs []bdevInfo
	if err := json.Unmarshal(res, &bdevs); err != nil || len(bdevs) != 1 {
		t.Fatalf("bdev_get_bdevs %s: %s", name, res)
	}
	var ds struct {
		NBDClient nbdClientStatus `json:"nbd_client"`
	}
	if err := json.Unmarshal(bdevs[0].DriverSpecific, &ds); err != nil {
		t.Fatalf("driver_specific of %s: %v", name, err)
	}
	return ds.NBDClient, true
}

// waitFor polls cond every 50 ms for up to limit.
func waitFor(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(limit); !cond(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("%s: not after %v", what, limit)
		}
	}
}

// readExport copies the whole export at uri into memory with nbdcopy.
func readExport(t *testing.T, uri string) []byte {
	t.Helper()
	out := filepath.Join(t.TempDir(), "copy.img")
	testutil.Run(t, nil, "nbdcopy", uri, out)
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
