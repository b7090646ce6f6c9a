package nbdremote

import (
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"blockcache/internal/bdev"
)

// serverSerial is the serial number of the certificate f presents.
func (f *tlsFront) serverSerial() *big.Int {
	f.t.Helper()
	leaf := f.cfg.Certificates[0].Leaf
	if leaf == nil {
		f.t.Fatal("the front's certificate has no parsed leaf")
	}
	return leaf.SerialNumber
}

func writeCRL(t *testing.T, dir string, b []byte) string {
	t.Helper()
	path := filepath.Join(dir, TLSCRLFile)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestTLSCRLRevokedServer: a server certificate that ca-crl.pem revokes is
// refused with -13 naming its serial and the CRL file, over TCP (name
// checked) and a Unix socket (chain only); one the CRL does not list is
// accepted; tls-verify-peer=false reads no CRL.
func TestTLSCRLRevokedServer(t *testing.T) {
	ca := newTestCA(t)
	backend := newFakeServer(t, 1<<20)
	for _, network := range []string{"tcp", "unix"} {
		f := newTLSFront(t, network, backend, ca, nil)
		serial := f.serverSerial()

		revoking := clientDir(t, ca, nil)
		crlPath := writeCRL(t, revoking, ca.CRL(big.NewInt(999), serial))
		_, err := openURI(t, f.uri("tls-certificates="+revoking))
		want := fmt.Sprintf("(serial %s) is revoked by %s", serial, crlPath)
		if !errors.Is(err, ErrTLSHandshake) || bdev.Errno(err) != syscall.EACCES || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: Open with the server revoked = %v, want ErrTLSHandshake (-13) saying %q", network, err, want)
		}
		if _, err := openURI(t, f.uri("tls-certificates="+revoking+"&tls-verify-peer=false")); err != nil {
			t.Errorf("%s: tls-verify-peer=false with a CRL revoking the server: %v", network, err)
		}

		other := clientDir(t, ca, nil)
		writeCRL(t, other, ca.CRL(new(big.Int).Add(serial, big.NewInt(1000))))
		d, err := openURI(t, f.uri("tls-certificates="+other))
		if err != nil {
			t.Fatalf("%s: Open with a CRL not listing the server: %v", network, err)
		}
		if err := d.WriteAt(make([]byte, 4096), 0, false); err != nil {
			t.Fatalf("%s: write through a session the CRL allowed: %v", network, err)
		}
	}
}

// TestTLSCRLReadAtReconnect: every connection reads the CRL again, so a
// server revoked after the bdev was created is refused at the next
// reconnect, and last_error says why.
func TestTLSCRLReadAtReconnect(t *testing.T) {
	ca := newTestCA(t)
	backend := newFakeServer(t, 1<<20)
	f := newTLSFront(t, "tcp", backend, ca, nil)
	dir := clientDir(t, ca, nil)
	d, err := openURI(t, f.uri("tls-certificates="+dir))
	if err != nil {
		t.Fatal(err)
	}
	crlPath := writeCRL(t, dir, ca.CRL(f.serverSerial()))
	backend.dropAll(false)
	for end := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		st := d.Status()
		if st.State == StateReconnecting && strings.Contains(st.LastError, "is revoked by "+crlPath) {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("after revoking the server: state %s, last_error %q; want reconnecting, refused by the CRL", st.State, st.LastError)
		}
	}
	if n := d.Status().Reconnects; n != 0 {
		t.Fatalf("%d reconnects to a revoked server", n)
	}
}

// TestTLSCRLUnusable: a CRL that cannot be used fails Open with -22
// naming the file, before anything is sent.
func TestTLSCRLUnusable(t *testing.T) {
	ca, other := newTestCA(t), newTestCA(t)
	f := newTLSFront(t, "tcp", newFakeServer(t, 1<<20), ca, nil)
	for crl, says := range map[string]string{
		"junk":              "no PEM X509 CRL block",
		string(other.CRL()): "which is not signed by the CA of",
		"-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n": "CRL 1:",
	} {
		dir := clientDir(t, ca, nil)
		path := writeCRL(t, dir, []byte(crl))
		_, err := openURI(t, f.uri("tls-certificates="+dir))
		if !errors.Is(err, ErrTLSCredentials) || bdev.Errno(err) != syscall.EINVAL || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), says) {
			t.Errorf("CRL %.20q: Open = %v, want ErrTLSCredentials (-22) naming %s and saying %q", crl, err, path, says)
		}
	}
	if opts, _, _ := f.state(); len(opts) != 0 {
		t.Fatalf("options %v sent with an unusable CRL", opts)
	}
}
