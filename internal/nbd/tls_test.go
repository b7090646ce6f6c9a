package nbd

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"blockcache/internal/bdev/bdevtest"
	"blockcache/internal/nbd/nbdclient"
	"blockcache/internal/nbdproto"
	"blockcache/internal/testutil"
)

// tlsServer serves one 64-block export "disk" with TLS in mode, with the
// credentials of ca.
func tlsServer(t *testing.T, ca *testutil.CA, mode TLSMode, verifyPeer bool) *testServer {
	t.Helper()
	dir := ca.ServerDir(t.TempDir())
	cfg, err := LoadTLSConfig(dir, verifyPeer)
	if err != nil {
		t.Fatal(err)
	}
	return startServerOpts(t, Options{TLS: mode, TLSConfig: cfg}, nil, Export{Name: "disk", Device: bdevtest.NewMalloc(t, "m0", 64)})
}

func clientTLS(ca *testutil.CA, certs ...tls.Certificate) *tls.Config {
	return &tls.Config{RootCAs: ca.Pool(), ServerName: "localhost", Certificates: certs, MinVersion: tls.VersionTLS12}
}

// roundTrip writes a block and reads it back through c.
func roundTrip(t *testing.T, c *nbdclient.Client) {
	t.Helper()
	want := bytes.Repeat([]byte("tls!"), 128)
	if err := c.WriteAt(want, 512, 0); err != nil {
		t.Fatalf("write: %v", err)
	}
	got := make([]byte, len(want))
	if err := c.ReadAt(got, 512); err != nil {
		t.Fatalf("read: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("read back other data than written")
	}
}

func TestTLSRequireRefusesOptionsBeforeStartTLS(t *testing.T) {
	ca := testutil.NewCA(t, "ca")
	ts := tlsServer(t, ca, TLSRequire, false)
	n := ts.handshake(t, stdFlags)
	for _, tc := range []struct {
		name string
		opt  uint32
		data []byte
	}{
		{"LIST", nbdclient.OptList, nil},
		{"INFO", nbdclient.OptInfo, nbdclient.InfoData("disk")},
		{"GO", nbdclient.OptGo, nbdclient.InfoData("disk")},
		{"STRUCTURED_REPLY", nbdclient.OptStructuredReply, nil},
		{"unknown", 99, []byte("x")},
	} {
		if _, err := n.Option(tc.opt, tc.data); optErrType(t, err) != nbdclient.RepErrTLSReqd {
			t.Errorf("%s before STARTTLS: %v, want NBD_REP_ERR_TLS_REQD", tc.name, err)
		}
	}
	// STARTTLS with data is invalid, and leaves the session in plain text.
	if _, err := n.Option(nbdclient.OptStartTLS, []byte{1}); optErrType(t, err) != nbdclient.RepErrInvalid {
		t.Fatalf("STARTTLS with data: %v, want NBD_REP_ERR_INVALID", err)
	}
	if err := n.StructuredReplies(); err == nil {
		t.Fatal("structured replies negotiated in plain text under require")
	}
	if err := n.StartTLS(clientTLS(ca)); err != nil {
		t.Fatal(err)
	}
	// Now options work, and STARTTLS again is invalid, never TLS_REQD.
	list, err := n.List()
	if err != nil || len(list) != 1 || list[0].Name != "disk" {
		t.Fatalf("LIST over TLS: %v %v", list, err)
	}
	if _, err := n.Option(nbdclient.OptStartTLS, nil); optErrType(t, err) != nbdclient.RepErrInvalid {
		t.Fatalf("STARTTLS twice: %v, want NBD_REP_ERR_INVALID", err)
	}
	if err := n.StructuredReplies(); err != nil {
		t.Fatal(err)
	}
	c, err := n.Go("disk")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if !c.Structured || c.Export.Flags&nbdclient.FlagSendDF == 0 {
		t.Fatalf("structured replies negotiated over TLS were not kept: flags %#x", c.Export.Flags)
	}
	roundTrip(t, c)
	if got := ts.log.find("nbd tls established", "TLS 1.3"); len(got) != 1 {
		t.Fatalf("log lines of the TLS session: %q", got)
	}
}

func TestTLSRequireExportNameCloses(t *testing.T) {
	ca := testutil.NewCA(t, "ca")
	ts := tlsServer(t, ca, TLSRequire, false)
	n := ts.handshake(t, stdFlags)
	if err := n.SendOption(nbdclient.OptExportName, []byte("disk")); err != nil {
		t.Fatal(err)
	}
	waitClosed(t, n.Conn())
	// The line is logged just after the close.
	waitFor(t, "the disconnect reason logged", 5*time.Second, func() bool {
		return len(ts.log.find("nbd disconnect", "NBD_OPT_EXPORT_NAME before NBD_OPT_STARTTLS")) == 1
	})
}

// TestOversizedExportNameCloses: an NBD_OPT_EXPORT_NAME longer than an
// option may be, which cannot be answered with an option reply, ends the
// session without a byte sent, whatever the TLS mode.
func TestOversizedExportNameCloses(t *testing.T) {
	ca := testutil.NewCA(t, "ca")
	for _, mode := range []TLSMode{TLSOff, TLSOn, TLSRequire} {
		t.Run(mode.String(), func(t *testing.T) {
			ts := tlsServer(t, ca, mode, false)
			n := ts.handshake(t, stdFlags)
			// Only the header: the server closes without reading the name.
			hdr := optionBytes(nbdclient.OptExportName, nil)
			binary.BigEndian.PutUint32(hdr[12:16], maxOptionBytes+1)
			if _, err := n.Conn().Write(hdr); err != nil {
				t.Fatal(err)
			}
			got, err := readUntilClosed(n.Conn(), time.Now().Add(5*time.Second))
			if err != nil {
				t.Fatal(err)
			}
			if got != 0 {
				t.Fatalf("the server answered an oversized %v with %d bytes, want a close", nbdproto.OptExportName, got)
			}
		})
	}
}

func TestTLSRequireNeedsFixedNewstyle(t *testing.T) {
	ca := testutil.NewCA(t, "ca")
	ts := tlsServer(t, ca, TLSRequire, false)
	n := ts.handshake(t, nbdclient.ClientNoZeroes)
	waitClosed(t, n.Conn())
}

// TestTLSStructuredRepliesForgotten: what was negotiated in plain text does
// not survive the upgrade (mode on, where plain-text options are answered).
func TestTLSStructuredRepliesForgotten(t *testing.T) {
	ca := testutil.NewCA(t, "ca")
	ts := tlsServer(t, ca, TLSOn, false)
	n := ts.handshake(t, stdFlags)
	if err := n.StructuredReplies(); err != nil {
		t.Fatal(err)
	}
	if err := n.StartTLS(clientTLS(ca)); err != nil {
		t.Fatal(err)
	}
	info, err := n.Info("disk")
	if err != nil {
		t.Fatal(err)
	}
	if info.Flags&nbdclient.FlagSendDF != 0 {
		t.Fatalf("NBD_FLAG_SEND_DF after the upgrade (flags %#x): structured replies were not forgotten", info.Flags)
	}
}

func TestTLSOnServesBoth(t *testing.T) {
	ca := testutil.NewCA(t, "ca")
	ts := tlsServer(t, ca, TLSOn, false)
	plain := ts.dial(t, nbdclient.Options{Export: "disk", StructuredReplies: true})
	roundTrip(t, plain)

	n := ts.handshake(t, stdFlags)
	if err := n.StartTLS(clientTLS(ca)); err != nil {
		t.Fatal(err)
	}
	c, err := n.Go("disk")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	roundTrip(t, c)
}

func TestTLSOffRefusesStartTLS(t *testing.T) {
	ts := startServer(t, Export{Name: "disk", Device: bdevtest.NewMalloc(t, "m0", 64)})
	n := ts.handshake(t, stdFlags)
	ca := testutil.NewCA(t, "ca")
	if err := n.StartTLS(clientTLS(ca)); optErrType(t, err) != nbdclient.RepErrUnsup {
		t.Fatalf("STARTTLS on a server without TLS: %v, want NBD_REP_ERR_UNSUP", err)
	}
	// The session goes on in plain text.
	if _, err := n.Info("disk"); err != nil {
		t.Fatal(err)
	}
}

func TestTLSWrongCAFails(t *testing.T) {
	ca, other := testutil.NewCA(t, "ca"), testutil.NewCA(t, "other")
	ts := tlsServer(t, ca, TLSRequire, false)
	n := ts.handshake(t, stdFlags)
	err := n.StartTLS(clientTLS(other))
	var unknown x509.UnknownAuthorityError
	if err == nil || !errors.As(err, &unknown) {
		t.Fatalf("TLS against a server of another CA: %v, want an unknown authority", err)
	}
	waitClosed(t, n.Conn())
}

func TestTLSVerifyPeer(t *testing.T) {
	ca := testutil.NewCA(t, "ca")
	good, revoked := ca.Client("good"), ca.Client("revoked")
	stranger := testutil.NewCA(t, "stranger").Client("stranger")
	dir := ca.ServerDir(t.TempDir(), revoked.Cert.SerialNumber)
	cfg, err := LoadTLSConfig(dir, true)
	if err != nil {
		t.Fatal(err)
	}
	ts := startServerOpts(t, Options{TLS: TLSRequire, TLSConfig: cfg}, nil, Export{Name: "disk", Device: bdevtest.NewMalloc(t, "m0", 64)})

	for _, tc := range []struct {
		name  string
		certs []tls.Certificate
		ok    bool
	}{
		{"no certificate", nil, false},
		{"certificate of another CA", []tls.Certificate{stranger.TLS(t)}, false},
		{"revoked certificate", []tls.Certificate{revoked.TLS(t)}, false},
		{"certificate of the CA", []tls.Certificate{good.TLS(t)}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := ts.handshake(t, stdFlags)
			err := n.StartTLS(clientTLS(ca, tc.certs...))
			if err == nil {
				// With TLS 1.3 the client learns of the refusal at its
				// first read.
				_, err = n.Info("disk")
			}
			if tc.ok != (err == nil) {
				t.Fatalf("got %v, want success %v", err, tc.ok)
			}
			if !tc.ok {
				waitClosed(t, n.Conn())
			}
		})
	}
	if got := ts.log.waitFind("nbd disconnect", "revoked by"); len(got) != 1 {
		t.Fatalf("revocation not logged: %q", ts.log.find("nbd disconnect"))
	}
}

func TestLoadTLSConfigErrors(t *testing.T) {
	ca := testutil.NewCA(t, "ca")
	other := testutil.NewCA(t, "other")
	for _, tc := range []struct {
		name   string
		mangle func(dir string)
		verify bool
		want   string
	}{
		{"no key", func(d string) { os.Remove(filepath.Join(d, TLSServerKeyFile)) }, false, "server-key.pem"},
		{"no CA with verify", func(d string) { os.Remove(filepath.Join(d, TLSCACertFile)) }, true, "ca-cert.pem"},
		{"garbage CA", func(d string) { os.WriteFile(filepath.Join(d, TLSCACertFile), []byte("junk"), 0o600) }, true, "no PEM CERTIFICATE"},
		{"CRL of another CA", func(d string) { os.WriteFile(filepath.Join(d, TLSCRLFile), other.CRL(), 0o600) }, true, "not signed by the CA"},
		{"garbage CRL", func(d string) { os.WriteFile(filepath.Join(d, TLSCRLFile), []byte("junk"), 0o600) }, true, "no PEM X509 CRL"},
	} {
		dir := ca.ServerDir(t.TempDir())
		tc.mangle(dir)
		_, err := LoadTLSConfig(dir, tc.verify)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error naming %q", tc.name, err, tc.want)
		}
	}
	// Without verify-peer the CA and the CRL are not needed.
	dir := ca.ServerDir(t.TempDir())
	os.Remove(filepath.Join(dir, TLSCACertFile))
	cfg, err := LoadTLSConfig(dir, false)
	if err != nil || cfg.MinVersion != tls.VersionTLS12 || cfg.ClientAuth != tls.NoClientCert {
		t.Fatalf("without verify-peer: %+v, %v", cfg, err)
	}
}

func TestParseTLSMode(t *testing.T) {
	for _, m := range []TLSMode{TLSOff, TLSOn, TLSRequire} {
		if got, err := ParseTLSMode(m.String()); err != nil || got != m {
			t.Errorf("ParseTLSMode(%q) = %v, %v", m.String(), got, err)
		}
	}
	if _, err := ParseTLSMode("yes"); !errors.Is(err, ErrInvalidOptions) {
		t.Errorf("ParseTLSMode(yes): %v", err)
	}
	if _, err := NewServer(nil, Options{TLS: TLSRequire}); !errors.Is(err, ErrInvalidOptions) {
		t.Errorf("NewServer with TLS and no config: %v", err)
	}
}

// fakeTLSCatalog is a fakeCatalog in TLSRequire mode whose "upgrade" keeps
// the plain-text stream, noting how much the server had written before it.
type fakeTLSCatalog struct {
	fakeCatalog
	out      *bytes.Buffer
	upgrades int
	at       int // len(out) at the upgrade
}

func (f *fakeTLSCatalog) tlsMode() TLSMode { return TLSRequire }
func (f *fakeTLSCatalog) startTLS() error {
	f.upgrades++
	f.at = f.out.Len()
	return nil
}

// optReplies splits server output into option replies, stopping at what
// is not one (NBD_OPT_EXPORT_NAME's answer).
func optReplies(b []byte) (types []uint32, opts []uint32) {
	for len(b) >= 20 && binary.BigEndian.Uint64(b) == nbdproto.MagicOptionReply {
		n := int(binary.BigEndian.Uint32(b[16:20]))
		if len(b) < 20+n {
			break
		}
		opts = append(opts, binary.BigEndian.Uint32(b[8:12]))
		types = append(types, binary.BigEndian.Uint32(b[12:16]))
		b = b[20+n:]
	}
	return types, opts
}

// noExportNameReply fails if an option reply answers NBD_OPT_EXPORT_NAME,
// which has none: it is answered with the export's size and flags, or by
// closing the connection.
func noExportNameReply(t *testing.T, opts []uint32) {
	t.Helper()
	for _, o := range opts {
		if nbdproto.Option(o) == nbdproto.OptExportName {
			t.Fatalf("an option reply answered %v", nbdproto.OptExportName)
		}
	}
}

// FuzzHandshakeTLSRequire runs negotiate in TLSRequire mode on arbitrary
// client bytes: before the upgrade only NBD_OPT_STARTTLS and NBD_OPT_ABORT
// are answered otherwise than NBD_REP_ERR_TLS_REQD, after it
// NBD_REP_ERR_TLS_REQD is never sent, no option reply ever answers
// NBD_OPT_EXPORT_NAME, there is at most one upgrade, and transmission
// begins only after it.
func FuzzHandshakeTLSRequire(f *testing.F) {
	greet := greetingReply(stdFlags)
	seq := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	starttls := optionBytes(nbdclient.OptStartTLS, nil)
	f.Add(seq(greet, optionBytes(nbdclient.OptList, nil), starttls, optionBytes(nbdclient.OptGo, nbdclient.InfoData("disk"))))
	f.Add(seq(greet, optionBytes(nbdclient.OptStructuredReply, nil), starttls, starttls, optionBytes(nbdclient.OptExportName, []byte("disk"))))
	f.Add(seq(greet, optionBytes(nbdclient.OptExportName, []byte("disk"))))
	f.Add(seq(greet, optionBytes(nbdclient.OptStartTLS, []byte{1}), optionBytes(nbdclient.OptAbort, nil)))
	f.Add(seq(greet, []byte("IHAVEOPT\x00\x00\x00\x07\x00\x01\x00\x00")))
	f.Add(seq(greetingReply(0), starttls))
	f.Add(seq(greet, []byte("IHAVEOPT\x00\x00\x00\x01\x00\x01\x00\x01"))) // EXPORT_NAME of 64 KiB + 1
	f.Add(seq(greet, starttls, []byte("IHAVEOPT\x00\x00\x00\x01\x00\x01\x00\x01")))

	ex, err := newExport(Export{Name: "disk", Device: bdevtest.NewMalloc(f, "fuzz", 64)})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		var out bytes.Buffer
		cat := &fakeTLSCatalog{fakeCatalog: fakeCatalog{ex: ex}, out: &out}
		neg, err := negotiate(bufioReader(in), bufioWriter(&out), cat)
		if err == nil && (neg.ex == nil || cat.upgrades != 1) {
			t.Fatalf("transmission with export %v after %d upgrades", neg.ex, cat.upgrades)
		}
		if cat.upgrades > 1 {
			t.Fatalf("%d upgrades", cat.upgrades)
		}
		b := out.Bytes()
		if len(b) < 18 {
			return
		}
		pre, post := b[18:], []byte(nil)
		if cat.upgrades == 1 {
			pre, post = b[18:cat.at], b[cat.at:]
		}
		types, opts := optReplies(pre)
		for i, typ := range types {
			o := nbdproto.Option(opts[i])
			if typ != uint32(nbdproto.RepErrTLSReqd) && o != nbdproto.OptStartTLS && o != nbdproto.OptAbort {
				t.Fatalf("before TLS, %v answered with %v", o, nbdproto.RepType(typ))
			}
		}
		noExportNameReply(t, opts)
		types, opts = optReplies(post)
		for _, typ := range types {
			if typ == uint32(nbdproto.RepErrTLSReqd) {
				t.Fatal("NBD_REP_ERR_TLS_REQD after the upgrade")
			}
		}
		noExportNameReply(t, opts)
	})
}
