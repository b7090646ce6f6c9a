package testutil

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestCAIssues: the server and client certificates verify against the CA
// for their names and usages only, serials count up from 2 unless given,
// and the validity is the spec's or from an hour ago to a day from now.
func TestCAIssues(t *testing.T) {
	ca := NewCA(t, "root")
	if ca.Cert.Subject.String() != "CN=root" || !ca.Cert.IsCA || ca.Cert.SerialNumber.Int64() != 1 {
		t.Fatalf("CA %q serial %s, CA %v; want CN=root, serial 1, a CA", ca.Cert.Subject, ca.Cert.SerialNumber, ca.Cert.IsCA)
	}
	srv, cl := ca.Server(), ca.Client("alice")
	for _, host := range []string{"localhost", "127.0.0.1", "::1"} {
		if _, err := srv.Cert.Verify(x509.VerifyOptions{DNSName: host, Roots: ca.Pool()}); err != nil {
			t.Errorf("server certificate for %s: %v", host, err)
		}
	}
	if _, err := srv.Cert.Verify(x509.VerifyOptions{DNSName: "store.example", Roots: ca.Pool()}); err == nil {
		t.Error("server certificate verified for store.example")
	}
	clientAuth := []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	if _, err := cl.Cert.Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: clientAuth}); err != nil {
		t.Errorf("client certificate: %v", err)
	}
	if _, err := srv.Cert.Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: clientAuth}); err == nil {
		t.Error("server certificate verified for client authentication")
	}
	if _, err := cl.Cert.Verify(x509.VerifyOptions{Roots: NewCA(t, "root").Pool(), KeyUsages: clientAuth}); err == nil {
		t.Error("client certificate verified by another CA of the same name")
	}
	if cl.Cert.Subject.CommonName != "alice" || srv.Cert.SerialNumber.Int64() != 2 || cl.Cert.SerialNumber.Int64() != 3 {
		t.Fatalf("client %q; serials %s, %s; want alice, 2, 3", cl.Cert.Subject, srv.Cert.SerialNumber, cl.Cert.SerialNumber)
	}
	if c := cl.TLS(t); c.Leaf == nil || !c.Leaf.Equal(cl.Cert) {
		t.Fatal("TLS key pair does not hold the client certificate")
	}

	now := time.Now()
	if !srv.Cert.NotBefore.Before(now.Add(-50*time.Minute)) || !srv.Cert.NotAfter.After(now.Add(23*time.Hour)) {
		t.Errorf("default validity %s to %s, want from an hour ago to a day from now", srv.Cert.NotBefore, srv.Cert.NotAfter)
	}
	end := now.Add(-time.Minute).Truncate(time.Second)
	old := ca.Issue(CertSpec{Name: "expired", Serial: 7, NotBefore: end.Add(-time.Hour), NotAfter: end})
	if old.Cert.SerialNumber.Int64() != 7 || !old.Cert.NotAfter.Equal(end) {
		t.Fatalf("serial %s valid to %s, want 7 to %s", old.Cert.SerialNumber, old.Cert.NotAfter, end)
	}
	if _, err := old.Cert.Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err == nil {
		t.Error("expired certificate verified")
	}
	if next := ca.Client("bob"); next.Cert.SerialNumber.Int64() != 4 {
		t.Fatalf("serial after an explicit one = %s, want 4", next.Cert.SerialNumber)
	}
}

// TestCAIntermediate: an intermediate chains to its root and issues
// certificates of its own.
func TestCAIntermediate(t *testing.T) {
	root := NewCA(t, "root")
	inter := root.Intermediate(CertSpec{Name: "intermediate", Serial: 40})
	leaf := inter.Client("leaf")
	if !inter.Cert.IsCA || inter.Cert.SerialNumber.Int64() != 40 || inter.Cert.Issuer.String() != "CN=root" {
		t.Fatalf("intermediate: CA %v, serial %s, issuer %q", inter.Cert.IsCA, inter.Cert.SerialNumber, inter.Cert.Issuer)
	}
	chains, err := leaf.Cert.Verify(x509.VerifyOptions{Roots: root.Pool(), Intermediates: inter.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	if err != nil {
		t.Fatal(err)
	}
	if c := chains[0]; len(c) != 3 || !c[1].Equal(inter.Cert) || !c[2].Equal(root.Cert) {
		t.Fatalf("chain of %d certificates, want leaf, intermediate, root", len(chains[0]))
	}
	if _, err := leaf.Cert.Verify(x509.VerifyOptions{Roots: root.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err == nil {
		t.Fatal("leaf of the intermediate verified without it")
	}
}

// TestCACRL: the CRL is the CA's, signed by it, listing exactly the
// serials.
func TestCACRL(t *testing.T) {
	ca, other := NewCA(t, "ca"), NewCA(t, "other")
	crl := parseCRL(t, ca.CRL(big.NewInt(1), big.NewInt(999)))
	if err := crl.CheckSignatureFrom(ca.Cert); err != nil {
		t.Fatal(err)
	}
	if err := crl.CheckSignatureFrom(other.Cert); err == nil {
		t.Fatal("the CRL checks as signed by another CA")
	}
	if got := revokedSerials(crl); len(got) != 2 || got[0] != 1 || got[1] != 999 {
		t.Fatalf("revoked serials %v, want [1 999]", got)
	}
	if n := len(parseCRL(t, ca.CRL()).RevokedCertificateEntries); n != 0 {
		t.Fatalf("empty CRL lists %d serials", n)
	}
}

// TestCredentialDirs: the directories hold what the servers and clients
// load, and nothing not asked for.
func TestCredentialDirs(t *testing.T) {
	ca := NewCA(t, "ca")
	srv := ca.ServerDir(filepath.Join(t.TempDir(), "server"), big.NewInt(5))
	pair, err := tls.LoadX509KeyPair(filepath.Join(srv, ServerCertFile), filepath.Join(srv, ServerKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pair.Leaf.Verify(x509.VerifyOptions{DNSName: "localhost", Roots: ca.Pool()}); err != nil {
		t.Fatal(err)
	}
	if b := readFile(t, srv, CACertFile); string(b) != string(ca.PEM) {
		t.Fatal("server directory's ca-cert.pem is not the CA")
	}
	if got := revokedSerials(parseCRL(t, readFile(t, srv, CACRLFile))); len(got) != 1 || got[0] != 5 {
		t.Fatalf("server directory's CRL lists serials %v, want [5]", got)
	}
	if _, err := os.Stat(filepath.Join(ca.ServerDir(t.TempDir()), CACRLFile)); !os.IsNotExist(err) {
		t.Fatalf("CRL without revocations: %v, want none written", err)
	}

	cl := ca.Client("client")
	dir := ClientDir(t, t.TempDir(), ca, &cl)
	if _, err := tls.LoadX509KeyPair(filepath.Join(dir, ClientCertFile), filepath.Join(dir, ClientKeyFile)); err != nil {
		t.Fatal(err)
	}
	empty := ClientDir(t, filepath.Join(t.TempDir(), "a", "b"), nil, nil)
	if ents, err := os.ReadDir(empty); err != nil || len(ents) != 0 {
		t.Fatalf("client directory without CA or certificate: %v, %v; want it empty", ents, err)
	}
}

func parseCRL(t *testing.T, b []byte) *x509.RevocationList {
	t.Helper()
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "X509 CRL" {
		t.Fatalf("no PEM X509 CRL in %q", b)
	}
	crl, err := x509.ParseRevocationList(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return crl
}

func revokedSerials(crl *x509.RevocationList) []int64 {
	var s []int64
	for _, e := range crl.RevokedCertificateEntries {
		s = append(s, e.SerialNumber.Int64())
	}
	return s
}

func readFile(t *testing.T, dir, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}
