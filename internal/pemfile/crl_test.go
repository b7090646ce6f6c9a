package pemfile

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"strings"
	"testing"
	"time"
)

type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newCA(t testing.TB, name string) testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return testCA{cert: cert, key: key}
}

func (ca testCA) issue(t testing.TB, serial int64) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "leaf"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (ca testCA) crl(t testing.TB, serials ...int64) []byte {
	t.Helper()
	tmpl := &x509.RevocationList{Number: big.NewInt(1), ThisUpdate: time.Now().Add(-time.Hour), NextUpdate: time.Now().Add(time.Hour)}
	for _, s := range serials {
		tmpl.RevokedCertificateEntries = append(tmpl.RevokedCertificateEntries, x509.RevocationListEntry{SerialNumber: big.NewInt(s), RevocationTime: time.Now()})
	}
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, ca.cert, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der})
}

// TestCRLsRevoked: a CRL revokes its issuer's certificates by serial, not
// another issuer's with the same serial, and never the root.
func TestCRLsRevoked(t *testing.T) {
	ca, other := newCA(t, "ca"), newCA(t, "other")
	revoked, kept, foreign := ca.issue(t, 7), ca.issue(t, 8), other.issue(t, 7)
	r, err := CRLs("crl.pem", ca.crl(t, 7, 1), []*x509.Certificate{other.cert, ca.cert}, "ca.pem")
	if err != nil {
		t.Fatal(err)
	}
	if got := r.Revoked([][]*x509.Certificate{{kept, ca.cert}, {revoked, ca.cert}}); got != revoked {
		t.Fatalf("Revoked = %v, want the certificate of serial 7", got)
	}
	for _, chain := range [][]*x509.Certificate{{kept, ca.cert}, {foreign, other.cert}, {ca.cert}} {
		if got := r.Revoked([][]*x509.Certificate{chain}); got != nil {
			t.Fatalf("Revoked(%q serial %s) = %v, want nil", chain[0].Issuer, chain[0].SerialNumber, got.SerialNumber)
		}
	}
}

// TestCRLsErrors: what is wrong and in which file.
func TestCRLsErrors(t *testing.T) {
	ca, other := newCA(t, "ca"), newCA(t, "other")
	cas := []*x509.Certificate{ca.cert}
	bad := pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: []byte("not DER")})
	for _, tc := range []struct {
		data []byte
		says string
	}{
		{[]byte("junk"), "CRL crl.pem: no PEM X509 CRL block"},
		{bad, "CRL crl.pem: CRL 1:"},
		{other.crl(t, 2), `CRL crl.pem: issued by "CN=other", which is not signed by the CA of ca.pem`},
	} {
		if _, err := CRLs("crl.pem", tc.data, cas, "ca.pem"); err == nil || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("CRLs = %v, want an error saying %q", err, tc.says)
		}
	}
}

// FuzzCRLs: any file content gives revocations or an error, never a
// panic.
func FuzzCRLs(f *testing.F) {
	ca := newCA(f, "ca")
	f.Add(ca.crl(f, 3))
	f.Add([]byte("-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n"))
	f.Add([]byte("junk"))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := CRLs("crl.pem", data, []*x509.Certificate{ca.cert}, "ca.pem")
		if err != nil {
			return
		}
		r.Revoked([][]*x509.Certificate{{ca.cert}})
	})
}
