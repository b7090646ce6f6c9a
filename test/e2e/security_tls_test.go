package e2e

// NBD over TLS with real clients (nbdinfo, nbdcopy, qemu-img, qemu-io, fio)
// against the real daemon, with certificates made by the test.

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"blockcache/internal/nbd/nbdclient"
	"blockcache/internal/testutil"
)

// tlsEnv is a daemon serving the 16 MiB malloc export "Disk" with TLS, and
// client certificate directories.
type tlsEnv struct {
	d    *Daemon
	sock string // NBD Unix socket
	ca   *testutil.CA
	good string // ca-cert.pem of the server's CA
	// wrong holds the ca-cert.pem of another CA.
	wrong string
}

func startTLSDaemon(t *testing.T, mode string, extra ...string) *tlsEnv {
	t.Helper()
	e := &tlsEnv{ca: testutil.NewCA(t, "blockcache test CA")}
	dir := shortTempDir(t)
	e.sock = filepath.Join(dir, "nbd.sock")
	e.good = testutil.ClientDir(t, filepath.Join(dir, "good"), e.ca, nil)
	e.wrong = testutil.ClientDir(t, filepath.Join(dir, "wrong"), testutil.NewCA(t, "another CA"), nil)
	args := []string{"--nbd-socket", e.sock}
	if mode != "off" {
		srv := e.ca.ServerDir(filepath.Join(dir, "server"))
		args = append(args, "--tls="+mode, "--tls-certificates", srv)
	}
	e.d = StartDaemon(t, DaemonOpts{Bare: true, Args: append(args, extra...)})
	e.d.Call(t, "bdev_malloc_create", mallocParams("Disk", 16, 512))
	var uri string
	e.d.CallInto(t, "nbd_start_disk", map[string]any{"bdev_name": "Disk"}, &uri)
	want := "nbd://" + e.d.NBDAddr + "/Disk"
	if mode == "require" {
		want = "nbds://" + e.d.NBDAddr + "/Disk"
	}
	if uri != want {
		t.Fatalf("nbd_start_disk returned %q, want %q", uri, want)
	}
	return e
}

// tcp and unix are libnbd URIs of the export; certs, if not empty, is the
// tls-certificates directory.
func (e *tlsEnv) tcp(scheme, certs string) string {
	u := scheme + "://" + e.d.NBDAddr + "/Disk"
	if certs != "" {
		u += "?tls-certificates=" + certs
	}
	return u
}

func (e *tlsEnv) unix(scheme, certs string) string {
	u := scheme + "+unix:///Disk?socket=" + e.sock
	if certs != "" {
		u += "&tls-certificates=" + certs
	}
	return u
}

// qemuArgs are qemu-img's or qemu-io's arguments to open the export over
// TCP with the x509 credentials of dir (none if empty).
func (e *tlsEnv) qemuArgs(dir string) []string {
	host, port, _ := net.SplitHostPort(e.d.NBDAddr)
	opts := "driver=nbd,host=" + host + ",port=" + port + ",export=Disk"
	var args []string
	if dir != "" {
		args = append(args, "--object", "tls-creds-x509,id=tls0,dir="+dir+",endpoint=client")
		opts += ",tls-creds=tls0"
	}
	return append(args, "--image-opts", opts)
}

// mustFail runs a client that must fail, and returns its output.
func mustFail(t *testing.T, what string, name string, args ...string) string {
	t.Helper()
	out, err := testutil.RunErr(t, nil, name, args...)
	if err == nil {
		t.Fatalf("%s: %s %s succeeded:\n%s", what, name, strings.Join(args, " "), out)
	}
	return out
}

func TestTLSRequireRealClients(t *testing.T) {
	t.Parallel()
	e := startTLSDaemon(t, "require")

	// nbdinfo over TCP and the Unix socket, with the CA.
	for _, uri := range []string{e.tcp("nbds", e.good), e.unix("nbds", e.good)} {
		out := testutil.Run(t, nil, "nbdinfo", "--size", uri)
		if strings.TrimSpace(out) != "16777216" {
			t.Fatalf("nbdinfo --size %s: %q", uri, out)
		}
	}
	// nbdcopy there and back.
	dir := t.TempDir()
	img := writeFile(t, dir, "in.raw", randomBytes(16, 16<<20))
	testutil.Run(t, nil, "nbdcopy", img, e.tcp("nbds", e.good))
	back := filepath.Join(dir, "out.raw")
	testutil.Run(t, nil, "nbdcopy", e.unix("nbds", e.good), back)
	if a, b := readFile(t, img), readFile(t, back); !bytes.Equal(a, b) {
		t.Fatal("nbdcopy over TLS read back other data than it wrote")
	}
	// qemu-img with x509 credentials.
	out := testutil.Run(t, nil, "qemu-img", append([]string{"info", "--output=json"}, e.qemuArgs(e.good)...)...)
	if !strings.Contains(out, `"virtual-size": 16777216`) {
		t.Fatalf("qemu-img info over TLS:\n%s", out)
	}
	out = testutil.Run(t, nil, "qemu-io", append(e.qemuArgs(e.good), "-c", "write -P 0x5a 0 4096", "-c", "read -P 0x5a 0 4096")...)
	if strings.Contains(out, "Pattern verification failed") || strings.Count(out, "ops;") != 2 {
		t.Fatalf("qemu-io over TLS:\n%s", out)
	}
	// fio's nbd engine takes a libnbd URI, but libnbd refuses
	// tls-certificates= in it unless the program allows local file access,
	// which fio does not: fio finds the CA in libnbd's default directory,
	// which for a user other than root is $HOME/.pki/libnbd.
	home := nobodyHome(t, e.ca)
	out, err := runAs(t, nobody, home, "fio", "--name=tls", "--ioengine=nbd", "--uri="+e.tcp("nbds", ""),
		"--rw=randrw", "--bs=4k", "--iodepth=8", "--size=4m", "--verify=crc32c", "--verify_fatal=1",
		"--output-format=terse", "--terse-version=3")
	if err != nil {
		t.Fatalf("fio over TLS: %v\n%s", err, out)
	}
	last := strings.TrimSpace(out)
	last = last[strings.LastIndex(last, "\n")+1:]
	if f := strings.Split(last, ";"); len(f) < 50 || f[4] != "0" || f[5] == "0" || f[46] == "0" {
		t.Fatalf("fio over TLS did not both read and write without error:\n%s", out)
	}

	// Failures: a server certificate of another CA, and no TLS at all.
	mustFail(t, "wrong CA", "nbdinfo", e.tcp("nbds", e.wrong))
	mustFail(t, "wrong CA", "qemu-img", append([]string{"info"}, e.qemuArgs(e.wrong)...)...)
	if out, err := runAs(t, nobody, nobodyHome(t, testutil.NewCA(t, "another CA")), "fio", "--name=wrongca", "--ioengine=nbd",
		"--uri="+e.tcp("nbds", ""), "--rw=read", "--size=1m"); err == nil {
		t.Fatalf("fio with another CA succeeded:\n%s", out)
	}
	out = mustFail(t, "no TLS", "nbdinfo", e.tcp("nbd", ""))
	if !strings.Contains(strings.ToLower(out), "tls") {
		t.Fatalf("nbdinfo without TLS failed without saying TLS is required:\n%s", out)
	}
	mustFail(t, "no TLS", "nbdinfo", e.unix("nbd", ""))
	out = mustFail(t, "no TLS", "qemu-img", append([]string{"info"}, e.qemuArgs("")...)...)
	if !strings.Contains(out, "TLS") {
		t.Fatalf("qemu-img without TLS failed without saying TLS is required:\n%s", out)
	}
	mustFail(t, "no TLS", "fio", "--name=notls", "--ioengine=nbd", "--uri="+e.tcp("nbd", ""), "--rw=read", "--size=1m")
}

// TestTLSRequireNoDowngrade speaks the protocol itself: under require,
// options before STARTTLS are refused with NBD_REP_ERR_TLS_REQD,
// NBD_OPT_EXPORT_NAME ends the session, and after the upgrade there is no
// way back.
func TestTLSRequireNoDowngrade(t *testing.T) {
	t.Parallel()
	e := startTLSDaemon(t, "require")
	handshake := func() *nbdclient.Negotiator {
		nc, err := net.Dial("tcp", e.d.NBDAddr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { nc.Close() })
		nc.SetDeadline(time.Now().Add(10 * time.Second))
		n, err := nbdclient.Handshake(nc, nbdclient.ClientFixedNewstyle|nbdclient.ClientNoZeroes)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	n := handshake()
	for _, opt := range []uint32{nbdclient.OptList, nbdclient.OptStructuredReply, nbdclient.OptGo} {
		data := []byte(nil)
		if opt == nbdclient.OptGo {
			data = nbdclient.InfoData("Disk")
		}
		_, err := n.Option(opt, data)
		var oe *nbdclient.OptError
		if !errors.As(err, &oe) || oe.Type != nbdclient.RepErrTLSReqd {
			t.Fatalf("option %d before STARTTLS: %v, want NBD_REP_ERR_TLS_REQD", opt, err)
		}
	}
	if err := n.StartTLS(tlsClientConfig(e.ca)); err != nil {
		t.Fatal(err)
	}
	var oe *nbdclient.OptError
	if _, err := n.Option(nbdclient.OptStartTLS, nil); !errors.As(err, &oe) || oe.Type != nbdclient.RepErrInvalid {
		t.Fatalf("STARTTLS after TLS: %v, want NBD_REP_ERR_INVALID", err)
	}
	c, err := n.Go("Disk")
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	if err := c.ReadAt(buf, 0); err != nil {
		t.Fatal(err)
	}
	c.Close()

	// NBD_OPT_EXPORT_NAME in plain text cannot be refused: the session ends.
	n = handshake()
	if _, err := n.ExportName("Disk"); err == nil {
		t.Fatal("NBD_OPT_EXPORT_NAME before STARTTLS entered transmission")
	}
}

func TestTLSVerifyPeerRealClients(t *testing.T) {
	t.Parallel()
	e := startTLSDaemon(t, "require", "--tls-verify-peer")
	cert := e.ca.Client("client")
	withCert := testutil.ClientDir(t, filepath.Join(shortTempDir(t), "client"), e.ca, &cert)
	stranger := testutil.NewCA(t, "stranger").Client("stranger")
	withStranger := testutil.ClientDir(t, filepath.Join(shortTempDir(t), "stranger"), e.ca, &stranger)

	testutil.Run(t, nil, "nbdinfo", e.tcp("nbds", withCert))
	testutil.Run(t, nil, "nbdinfo", e.unix("nbds", withCert))
	testutil.Run(t, nil, "qemu-img", append([]string{"info"}, e.qemuArgs(withCert)...)...)
	mustFail(t, "no client certificate", "nbdinfo", e.tcp("nbds", e.good))
	mustFail(t, "no client certificate", "qemu-img", append([]string{"info"}, e.qemuArgs(e.good)...)...)
	mustFail(t, "client certificate of another CA", "nbdinfo", e.tcp("nbds", withStranger))
	if !strings.Contains(e.d.Stderr(), "client=") {
		t.Fatalf("the accepted client's certificate was not logged:\n%s", e.d.Stderr())
	}
}

// TestTLSOffAndOn: a client requiring TLS fails against a server without
// it; a server with --tls=on serves clients with and without TLS.
func TestTLSOffAndOn(t *testing.T) {
	t.Parallel()
	off := startTLSDaemon(t, "off")
	mustFail(t, "TLS client, server without TLS", "nbdinfo", off.tcp("nbds", off.good))
	mustFail(t, "TLS client, server without TLS", "qemu-img", append([]string{"info"}, off.qemuArgs(off.good)...)...)
	testutil.Run(t, nil, "nbdinfo", off.tcp("nbd", ""))

	on := startTLSDaemon(t, "on")
	testutil.Run(t, nil, "nbdinfo", on.tcp("nbd", ""))
	testutil.Run(t, nil, "nbdinfo", on.tcp("nbds", on.good))
	testutil.Run(t, nil, "nbdinfo", on.unix("nbds", on.good))
	testutil.Run(t, nil, "qemu-img", append([]string{"info"}, on.qemuArgs(on.good)...)...)
	testutil.Run(t, nil, "qemu-img", append([]string{"info"}, on.qemuArgs("")...)...)
	mustFail(t, "wrong CA", "nbdinfo", on.tcp("nbds", on.wrong))
}

// TestTLSFlagErrors: bad TLS flags stop serve at once, naming the flag.
func TestTLSFlagErrors(t *testing.T) {
	t.Parallel()
	empty := t.TempDir()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--tls-psk", "/etc/keys.psk"}, "--tls-psk: not supported: Go's crypto/tls has no pre-shared-key"},
		{[]string{"--tls=maybe"}, `--tls "maybe": want off, on or require`},
		{[]string{"--tls=require"}, "--tls=require needs --tls-certificates DIR"},
		{[]string{"--tls-certificates", empty}, "need --tls=on or --tls=require"},
		{[]string{"--tls=on", "--tls-certificates", empty}, "server-cert.pem"},
		{[]string{"--nbd-allow", "10.0.0.0/40"}, "--nbd-allow"},
		{[]string{"--nbd-socket-mode", "999"}, "--nbd-socket-mode"},
	} {
		d := startProcess(t, DaemonOpts{Bare: true, Args: tc.args})
		if code := d.Wait(t, 30*time.Second); code == 0 {
			t.Errorf("%v: serve exited 0", tc.args)
		}
		if !strings.Contains(d.Stderr(), tc.want) {
			t.Errorf("%v: stderr does not say %q:\n%s", tc.args, tc.want, d.Stderr())
		}
	}
}

func readFile(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func tlsClientConfig(ca *testutil.CA) *tls.Config {
	return &tls.Config{RootCAs: ca.Pool(), ServerName: "localhost", MinVersion: tls.VersionTLS12}
}

// nobody is the user the clients that read libnbd's default certificate
// directory run as (for root it is /etc/pki/libnbd, which tests must not
// touch).
var nobody = syscall.Credential{Uid: 65534, Gid: 65534}

// nobodyHome makes a home directory for nobody holding ca's certificate, if
// ca is not nil, in libnbd's default place, .pki/libnbd/ca-cert.pem.
func nobodyHome(t *testing.T, ca *testutil.CA) string {
	t.Helper()
	home, err := os.MkdirTemp("", "bce2e-home")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(home) })
	if ca != nil {
		testutil.ClientDir(t, filepath.Join(home, ".pki", "libnbd"), ca, nil)
	}
	err = filepath.WalkDir(home, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, int(nobody.Uid), int(nobody.Gid))
	})
	if err != nil {
		t.Fatal(err)
	}
	return home
}

// runAs runs a client as the user cred with HOME and the working directory
// home, and returns its combined output and exit error.
func runAs(t *testing.T, cred syscall.Credential, home, name string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(testutil.RequireTool(t, name), args...)
	cmd.Env = append(os.Environ(), "HOME="+home)
	cmd.Dir = home
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &cred}
	return testutil.RunCmd(t, cmd)
}
