package pemfile

import (
	"crypto/x509"
	"strings"
	"testing"

	"blockcache/internal/testutil"
)

// TestCRLsRevokedIntermediate: a chain root -> intermediate -> leaf. The
// root's CRL revoking the intermediate's serial revokes the chain (and
// names the intermediate); the root's CRL listing the leaf's serial does
// not revoke the leaf, which is the intermediate's to revoke. The
// intermediate's own CRL is usable only when the intermediate is among the
// trusted CAs.
func TestCRLsRevokedIntermediate(t *testing.T) {
	root := testutil.NewCA(t, "root")
	inter := root.Intermediate(testutil.CertSpec{Name: "intermediate", Serial: 40})
	leaf := issue(inter, 41)
	chain := []*x509.Certificate{leaf, inter.Cert, root.Cert}

	r, err := CRLs("crl.pem", root.CRL(serials(40)...), []*x509.Certificate{root.Cert}, "ca.pem")
	if err != nil {
		t.Fatal(err)
	}
	if got := r.Revoked([][]*x509.Certificate{chain}); got != inter.Cert {
		t.Fatalf("Revoked with the intermediate revoked = %v, want the intermediate", got)
	}
	r, err = CRLs("crl.pem", root.CRL(serials(41)...), []*x509.Certificate{root.Cert}, "ca.pem")
	if err != nil {
		t.Fatal(err)
	}
	if got := r.Revoked([][]*x509.Certificate{chain}); got != nil {
		t.Fatalf("the root's CRL revoked %q serial %s, issued by the intermediate", got.Subject, got.SerialNumber)
	}

	if _, err := CRLs("crl.pem", inter.CRL(serials(41)...), []*x509.Certificate{root.Cert}, "ca.pem"); err == nil ||
		!strings.Contains(err.Error(), `issued by "CN=intermediate", which is not signed by the CA of ca.pem`) {
		t.Fatalf("the intermediate's CRL, only the root trusted: %v, want refused", err)
	}
	r, err = CRLs("crl.pem", inter.CRL(serials(41)...), []*x509.Certificate{root.Cert, inter.Cert}, "ca.pem")
	if err != nil {
		t.Fatal(err)
	}
	if got := r.Revoked([][]*x509.Certificate{chain}); got != leaf {
		t.Fatalf("Revoked with the intermediate's CRL listing the leaf = %v, want the leaf", got)
	}
}
