package pemfile

import (
	"crypto/x509"
	"encoding/pem"
	"math/big"
	"strings"
	"testing"

	"blockcache/internal/testutil"
)

// issue returns a certificate ca issued with the serial.
func issue(ca *testutil.CA, serial int64) *x509.Certificate {
	return ca.Issue(testutil.CertSpec{Name: "leaf", Serial: serial}).Cert
}

func serials(ns ...int64) []*big.Int {
	var s []*big.Int
	for _, n := range ns {
		s = append(s, big.NewInt(n))
	}
	return s
}

// TestCRLsRevoked: a CRL revokes its issuer's certificates by serial, not
// another issuer's with the same serial, and never the root.
func TestCRLsRevoked(t *testing.T) {
	ca, other := testutil.NewCA(t, "ca"), testutil.NewCA(t, "other")
	revoked, kept, foreign := issue(ca, 7), issue(ca, 8), issue(other, 7)
	r, err := CRLs("crl.pem", ca.CRL(serials(7, 1)...), []*x509.Certificate{other.Cert, ca.Cert}, "ca.pem")
	if err != nil {
		t.Fatal(err)
	}
	if got := r.Revoked([][]*x509.Certificate{{kept, ca.Cert}, {revoked, ca.Cert}}); got != revoked {
		t.Fatalf("Revoked = %v, want the certificate of serial 7", got)
	}
	for _, chain := range [][]*x509.Certificate{{kept, ca.Cert}, {foreign, other.Cert}, {ca.Cert}} {
		if got := r.Revoked([][]*x509.Certificate{chain}); got != nil {
			t.Fatalf("Revoked(%q serial %s) = %v, want nil", chain[0].Issuer, chain[0].SerialNumber, got.SerialNumber)
		}
	}
}

// TestCRLsErrors: what is wrong and in which file.
func TestCRLsErrors(t *testing.T) {
	ca, other := testutil.NewCA(t, "ca"), testutil.NewCA(t, "other")
	cas := []*x509.Certificate{ca.Cert}
	bad := pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: []byte("not DER")})
	for _, tc := range []struct {
		data []byte
		says string
	}{
		{[]byte("junk"), "CRL crl.pem: no PEM X509 CRL block"},
		{bad, "CRL crl.pem: CRL 1:"},
		{other.CRL(serials(2)...), `CRL crl.pem: issued by "CN=other", which is not signed by the CA of ca.pem`},
	} {
		if _, err := CRLs("crl.pem", tc.data, cas, "ca.pem"); err == nil || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("CRLs = %v, want an error saying %q", err, tc.says)
		}
	}
}

// FuzzCRLs: any file content gives revocations or an error, never a
// panic.
func FuzzCRLs(f *testing.F) {
	ca := testutil.NewCA(f, "ca")
	f.Add(ca.CRL(serials(3)...))
	f.Add([]byte("-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n"))
	f.Add([]byte("junk"))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := CRLs("crl.pem", data, []*x509.Certificate{ca.Cert}, "ca.pem")
		if err != nil {
			return
		}
		r.Revoked([][]*x509.Certificate{{ca.Cert}})
	})
}
