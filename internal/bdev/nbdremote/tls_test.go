package nbdremote

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"blockcache/internal/bdev"
	"blockcache/internal/nbdproto"
	"blockcache/internal/testutil"
)

// newTestCA returns a throw-away CA.
func newTestCA(t *testing.T) *testutil.CA { return testutil.NewCA(t, "test CA") }

// clientDir writes a client certificate directory trusting trust, with a
// client certificate named client from ca if ca is not nil.
func clientDir(t *testing.T, trust, ca *testutil.CA) string {
	t.Helper()
	var cert *testutil.Issued
	if ca != nil {
		c := ca.Client("client")
		cert = &c
	}
	return testutil.ClientDir(t, t.TempDir(), trust, cert)
}

// tlsFront is an NBD server front that speaks the handshake up to and
// including TLS and then relays the decrypted stream to a fakeServer,
// so the client meets TLS over the fake server's behaviour.
type tlsFront struct {
	t       *testing.T
	ln      net.Listener
	backend *fakeServer
	cfg     *tls.Config
	refuse  nbdproto.RepType // error reply to NBD_OPT_STARTTLS; 0 accepts
	garbage bool             // send plain bytes after the ACK

	mu struct {
		sync.Mutex
		options    []nbdproto.Option // options received in plain text, in order
		handshakes int               // TLS sessions established
		clientCN   string
	}
}

func newTLSFront(t *testing.T, network string, backend *fakeServer, ca, clientCA *testutil.CA) *tlsFront {
	t.Helper()
	var ln net.Listener
	var err error
	if network == "unix" {
		ln, err = net.Listen("unix", filepath.Join(t.TempDir(), "tls.sock"))
	} else {
		ln, err = net.Listen("tcp", "127.0.0.1:0")
	}
	if err != nil {
		t.Fatal(err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{ca.Server().TLS(t)}, MinVersion: tls.VersionTLS12}
	if clientCA != nil {
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
		cfg.ClientCAs = clientCA.Pool()
	}
	f := &tlsFront{t: t, ln: ln, backend: backend, cfg: cfg}
	go f.serve()
	t.Cleanup(func() { ln.Close() })
	return f
}

// uri is the front's URI with the query q (without socket=).
func (f *tlsFront) uri(q string) string {
	if f.ln.Addr().Network() == "unix" {
		return "nbds+unix:///disk?socket=" + f.ln.Addr().String() + "&" + q
	}
	return "nbds://" + f.ln.Addr().String() + "/disk?" + q
}

func (f *tlsFront) serve() {
	for {
		c, err := f.ln.Accept()
		if err != nil {
			return
		}
		go f.handle(c)
	}
}

func (f *tlsFront) handle(c net.Conn) {
	defer c.Close()
	cflags, err := greetClient(c)
	if err != nil {
		return
	}
	for {
		var h [16]byte
		if _, err := io.ReadFull(c, h[:]); err != nil {
			return
		}
		opt := nbdproto.Option(binary.BigEndian.Uint32(h[8:]))
		if _, err := io.CopyN(io.Discard, c, int64(binary.BigEndian.Uint32(h[12:]))); err != nil {
			return
		}
		f.mu.Lock()
		f.mu.options = append(f.mu.options, opt)
		f.mu.Unlock()
		if opt != nbdproto.OptStartTLS {
			optReply(c, opt, nbdproto.RepErrTLSReqd, []byte("TLS first"))
			continue
		}
		if f.refuse != 0 {
			optReply(c, opt, f.refuse, []byte("no TLS here"))
			continue
		}
		optReply(c, opt, nbdproto.RepAck, nil)
		break
	}
	if f.garbage {
		c.Write([]byte("plain text"))
	}
	tc := tls.Server(c, f.cfg)
	if err := tc.Handshake(); err != nil {
		return
	}
	f.mu.Lock()
	f.mu.handshakes++
	if pc := tc.ConnectionState().PeerCertificates; len(pc) > 0 {
		f.mu.clientCN = pc[0].Subject.CommonName
	}
	f.mu.Unlock()
	b, err := net.Dial("unix", f.backend.addr)
	if err != nil {
		return
	}
	defer b.Close()
	var greet [18]byte // the backend's, taken in place of the client
	if _, err := io.ReadFull(b, greet[:]); err != nil {
		return
	}
	if _, err := b.Write(cflags[:]); err != nil {
		return
	}
	go func() {
		io.Copy(b, tc)
		b.Close()
	}()
	io.Copy(tc, b)
}

func (f *tlsFront) state() (options []nbdproto.Option, handshakes int, clientCN string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]nbdproto.Option(nil), f.mu.options...), f.mu.handshakes, f.mu.clientCN
}

func openURI(t *testing.T, s string) (*Device, error) {
	t.Helper()
	u, err := ParseURI(s)
	if err != nil {
		t.Fatalf("ParseURI(%q): %v", s, err)
	}
	d, err := Open("tls0", u, uuid.Nil, fastOptions())
	if err == nil {
		t.Cleanup(func() { d.Close() })
	}
	return d, err
}

// TestTLSSession: STARTTLS is the first option, the server's certificate
// is verified against the directory's CA and the host name, the client
// presents its certificate, data goes through, and a reconnect after the
// connection drops runs TLS again.
func TestTLSSession(t *testing.T) {
	ca := newTestCA(t)
	backend := newFakeServer(t, 1<<20)
	f := newTLSFront(t, "tcp", backend, ca, ca)
	d, err := openURI(t, f.uri("tls-certificates="+clientDir(t, ca, ca)))
	if err != nil {
		t.Fatal(err)
	}
	want := bytes.Repeat([]byte{0x5a}, 4096)
	if err := d.WriteAt(want, 8192, false); err != nil {
		t.Fatal(err)
	}
	if err := d.Flush(); err != nil {
		t.Fatal(err)
	}
	if got := backend.contents()[8192 : 8192+4096]; !bytes.Equal(got, want) {
		t.Fatal("the write did not reach the server behind TLS")
	}
	opts, hs, cn := f.state()
	if len(opts) != 1 || opts[0] != nbdproto.OptStartTLS || hs != 1 || cn != "client" {
		t.Fatalf("plain-text options %v, %d TLS sessions, client %q; want only NBD_OPT_STARTTLS, 1, client", opts, hs, cn)
	}

	backend.dropAll(false)
	for end := time.Now().Add(5 * time.Second); d.Status().Reconnects == 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatal("no reconnect within 5 s of the drop")
		}
	}
	got := make([]byte, 4096)
	if err := d.ReadAt(got, 8192); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("read after the reconnect differs")
	}
	if opts, hs, _ := f.state(); hs < 2 || len(opts) != hs {
		t.Fatalf("after a reconnect: plain-text options %v, %d TLS sessions; want one STARTTLS per session, at least 2", opts, hs)
	}
}

// TestTLSRefused: a server that refuses STARTTLS fails Open with -95 and
// is sent nothing else: no downgrade.
func TestTLSRefused(t *testing.T) {
	ca := newTestCA(t)
	for _, refusal := range []nbdproto.RepType{nbdproto.RepErrUnsup, nbdproto.RepErrPolicy} {
		f := newTLSFront(t, "unix", newFakeServer(t, 1<<20), ca, nil)
		f.refuse = refusal
		_, err := openURI(t, f.uri("tls-certificates="+clientDir(t, ca, nil)))
		if !errors.Is(err, ErrTLSRefused) || bdev.Errno(err) != syscall.EOPNOTSUPP || !strings.Contains(err.Error(), "no TLS here") {
			t.Fatalf("refusal %#x: Open = %v, want ErrTLSRefused (-95) quoting the server", refusal, err)
		}
		if opts, hs, _ := f.state(); len(opts) != 1 || hs != 0 {
			t.Fatalf("refusal %#x: the client sent options %v and made %d TLS sessions after the refusal", refusal, opts, hs)
		}
	}
}

// TestTLSVerification: who the server must be.
func TestTLSVerification(t *testing.T) {
	ca, other := newTestCA(t), newTestCA(t)
	backend := newFakeServer(t, 1<<20)
	tcp := newTLSFront(t, "tcp", backend, ca, nil)
	unix := newTLSFront(t, "unix", backend, ca, nil)
	good, wrong := clientDir(t, ca, nil), clientDir(t, other, nil)
	_, port, _ := net.SplitHostPort(tcp.ln.Addr().String())
	cases := []struct {
		uri  string
		fail string // "" succeeds
	}{
		{tcp.uri("tls-certificates=" + good), ""},
		{"nbds://localhost:" + port + "/disk?tls-certificates=" + good, ""},
		{tcp.uri("tls-certificates=" + wrong), "unknown authority"},
		{tcp.uri("tls-certificates=" + wrong + "&tls-verify-peer=false"), ""},
		{tcp.uri("tls-certificates=" + good + "&tls-hostname=store.example"), "store.example"},
		{tcp.uri("tls-certificates=" + good + "&tls-hostname=localhost"), ""},
		{unix.uri("tls-certificates=" + good), ""},
		{unix.uri("tls-certificates=" + wrong), "unknown authority"},
		{unix.uri("tls-certificates=" + good + "&tls-hostname=localhost"), ""},
		{unix.uri("tls-certificates=" + good + "&tls-hostname=store.example"), "store.example"},
	}
	for _, tc := range cases {
		_, err := openURI(t, tc.uri)
		switch {
		case tc.fail == "" && err != nil:
			t.Errorf("%s: %v", tc.uri, err)
		case tc.fail != "" && (!errors.Is(err, ErrTLSHandshake) || bdev.Errno(err) != syscall.EACCES || !strings.Contains(err.Error(), tc.fail)):
			t.Errorf("%s: Open = %v, want ErrTLSHandshake (-13) saying %q", tc.uri, err, tc.fail)
		}
	}
}

// TestTLSClientCertificateRejected: a server that requires a client
// certificate the client does not have fails Open with ErrTLSHandshake.
func TestTLSClientCertificateRejected(t *testing.T) {
	ca, other := newTestCA(t), newTestCA(t)
	f := newTLSFront(t, "tcp", newFakeServer(t, 1<<20), ca, ca)
	for _, dir := range []string{clientDir(t, ca, nil), clientDir(t, ca, other)} {
		_, err := openURI(t, f.uri("tls-certificates="+dir))
		if !errors.Is(err, ErrTLSHandshake) || !strings.Contains(err.Error(), "remote error") {
			t.Errorf("Open with %s = %v, want ErrTLSHandshake with the server's alert", dir, err)
		}
	}
}

// TestTLSCredentials: a directory that cannot be used fails with -22
// naming the file, before anything is sent.
func TestTLSCredentials(t *testing.T) {
	ca := newTestCA(t)
	f := newTLSFront(t, "tcp", newFakeServer(t, 1<<20), ca, nil)
	noCA := clientDir(t, nil, nil)
	certOnly := clientDir(t, ca, ca)
	os.Remove(filepath.Join(certOnly, TLSClientKeyFile))
	notPEM := clientDir(t, nil, nil)
	os.WriteFile(filepath.Join(notPEM, TLSCACertFile), []byte("not a certificate"), 0o600)
	for dir, says := range map[string]string{
		noCA:                     TLSCACertFile,
		certOnly:                 "without " + TLSClientKeyFile,
		notPEM:                   "no PEM CERTIFICATE",
		filepath.Join(noCA, "x"): "no such file",
	} {
		_, err := openURI(t, f.uri("tls-certificates="+dir))
		if !errors.Is(err, ErrTLSCredentials) || bdev.Errno(err) != syscall.EINVAL || !strings.Contains(err.Error(), says) {
			t.Errorf("Open with %s = %v, want ErrTLSCredentials (-22) saying %q", dir, err, says)
		}
	}
	if opts, _, _ := f.state(); len(opts) != 0 {
		t.Fatalf("options %v sent with unusable credentials", opts)
	}
	// Without a CA the server is not verified only when asked.
	if _, err := openURI(t, f.uri("tls-certificates="+noCA+"&tls-verify-peer=false")); err != nil {
		t.Fatal(err)
	}
}

// TestTLSPlainTextAfterAck: bytes before the TLS handshake are a protocol
// violation.
func TestTLSPlainTextAfterAck(t *testing.T) {
	ca := newTestCA(t)
	f := newTLSFront(t, "unix", newFakeServer(t, 1<<20), ca, nil)
	f.garbage = true
	_, err := openURI(t, f.uri("tls-certificates="+clientDir(t, ca, nil)))
	if !errors.Is(err, ErrProtocol) {
		t.Fatalf("Open = %v, want a protocol error", err)
	}
}

// TestTLSRequiredByServer: an nbd:// URI to a server requiring TLS fails
// with -95 and says to use nbds://.
func TestTLSRequiredByServer(t *testing.T) {
	ca := newTestCA(t)
	f := newTLSFront(t, "unix", newFakeServer(t, 1<<20), ca, nil)
	_, err := openURI(t, "nbd+unix:///disk?socket="+f.ln.Addr().String())
	if !errors.Is(err, ErrTLSNotSupported) || !strings.Contains(err.Error(), "nbds://") {
		t.Fatalf("Open = %v, want ErrTLSNotSupported pointing to nbds://", err)
	}
}

func TestDefaultTLSDirs(t *testing.T) {
	if got := DefaultTLSDirs(0, "/root"); len(got) != 1 || got[0] != "/etc/pki/libnbd" {
		t.Errorf("root: %v", got)
	}
	got := DefaultTLSDirs(1000, "/home/u")
	if len(got) != 2 || got[0] != "/home/u/.pki/libnbd" || got[1] != "/home/u/.config/pki/libnbd" {
		t.Errorf("user: %v", got)
	}
	if got := DefaultTLSDirs(1000, ""); len(got) != 0 {
		t.Errorf("no home: %v", got)
	}
}

// FuzzStartTLS runs the greeting and NBD_OPT_STARTTLS against arbitrary
// server bytes: no panic, and only an empty NBD_REP_ACK lets TLS start.
func FuzzStartTLS(f *testing.F) {
	var g bytes.Buffer
	binary.Write(&g, binary.BigEndian, nbdproto.MagicNBD)
	binary.Write(&g, binary.BigEndian, nbdproto.MagicOption)
	binary.Write(&g, binary.BigEndian, nbdproto.FlagFixedNewstyle|nbdproto.FlagNoZeroes)
	reply := func(typ nbdproto.RepType, data []byte) []byte {
		b := binary.BigEndian.AppendUint64(append([]byte(nil), g.Bytes()...), nbdproto.MagicOptionReply)
		b = binary.BigEndian.AppendUint32(b, uint32(nbdproto.OptStartTLS))
		b = binary.BigEndian.AppendUint32(b, uint32(typ))
		b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
		return append(b, data...)
	}
	f.Add(reply(nbdproto.RepAck, nil))
	f.Add(reply(nbdproto.RepErrUnsup, []byte("no")))
	f.Add(reply(nbdproto.RepErrPolicy, nil))
	f.Add(reply(nbdproto.RepInfo, []byte{0, 0}))
	f.Add(reply(nbdproto.RepAck, []byte{1}))
	f.Fuzz(func(t *testing.T, server []byte) {
		r := bytes.NewReader(server)
		var sent bytes.Buffer
		if _, err := greet(r, &sent); err != nil {
			return
		}
		err := startTLS(r, &sent)
		ok := len(server) >= 18+20 && binary.BigEndian.Uint64(server[18:]) == nbdproto.MagicOptionReply &&
			nbdproto.Option(binary.BigEndian.Uint32(server[18+8:])) == nbdproto.OptStartTLS &&
			nbdproto.RepType(binary.BigEndian.Uint32(server[18+12:])) == nbdproto.RepAck && binary.BigEndian.Uint32(server[18+16:]) == 0
		if (err == nil) != ok {
			t.Fatalf("startTLS on %x = %v", server, err)
		}
		if err != nil && !errors.Is(err, ErrProtocol) && !errors.Is(err, ErrTLSRefused) {
			t.Fatalf("startTLS error %v is neither a protocol error nor a refusal", err)
		}
		if want := 4 + 16; sent.Len() != want || nbdproto.Option(binary.BigEndian.Uint32(sent.Bytes()[4+8:])) != nbdproto.OptStartTLS {
			t.Fatalf("the client sent %x, want its flags and NBD_OPT_STARTTLS only", sent.Bytes())
		}
	})
}
