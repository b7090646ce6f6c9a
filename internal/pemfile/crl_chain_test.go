package pemfile

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"strings"
	"testing"
	"time"
)

// intermediate returns a CA that ca issued with the serial.
func (ca testCA) intermediate(t testing.TB, name string, serial int64) testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return testCA{cert: cert, key: key}
}

// TestCRLsRevokedIntermediate: a chain root -> intermediate -> leaf. The
// root's CRL revoking the intermediate's serial revokes the chain (and
// names the intermediate); the root's CRL listing the leaf's serial does
// not revoke the leaf, which is the intermediate's to revoke. The
// intermediate's own CRL is usable only when the intermediate is among the
// trusted CAs.
func TestCRLsRevokedIntermediate(t *testing.T) {
	root := newCA(t, "root")
	inter := root.intermediate(t, "intermediate", 40)
	leaf := inter.issue(t, 41)
	chain := []*x509.Certificate{leaf, inter.cert, root.cert}

	r, err := CRLs("crl.pem", root.crl(t, 40), []*x509.Certificate{root.cert}, "ca.pem")
	if err != nil {
		t.Fatal(err)
	}
	if got := r.Revoked([][]*x509.Certificate{chain}); got != inter.cert {
		t.Fatalf("Revoked with the intermediate revoked = %v, want the intermediate", got)
	}
	r, err = CRLs("crl.pem", root.crl(t, 41), []*x509.Certificate{root.cert}, "ca.pem")
	if err != nil {
		t.Fatal(err)
	}
	if got := r.Revoked([][]*x509.Certificate{chain}); got != nil {
		t.Fatalf("the root's CRL revoked %q serial %s, issued by the intermediate", got.Subject, got.SerialNumber)
	}

	if _, err := CRLs("crl.pem", inter.crl(t, 41), []*x509.Certificate{root.cert}, "ca.pem"); err == nil ||
		!strings.Contains(err.Error(), `issued by "CN=intermediate", which is not signed by the CA of ca.pem`) {
		t.Fatalf("the intermediate's CRL, only the root trusted: %v, want refused", err)
	}
	r, err = CRLs("crl.pem", inter.crl(t, 41), []*x509.Certificate{root.cert, inter.cert}, "ca.pem")
	if err != nil {
		t.Fatal(err)
	}
	if got := r.Revoked([][]*x509.Certificate{chain}); got != leaf {
		t.Fatalf("Revoked with the intermediate's CRL listing the leaf = %v, want the leaf", got)
	}
}
