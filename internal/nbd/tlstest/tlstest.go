// Package tlstest makes throw-away X.509 credentials for tests of NBD over
// TLS, laid out in directories as nbdkit, qemu (tls-creds-x509) and libnbd
// (tls-certificates) read them.
package tlstest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// CA is a certificate authority that issues server and client
// certificates.
type CA struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
	PEM  []byte
	t    testing.TB
	next int64 // next serial number
}

// NewCA makes a self-signed CA named name.
func NewCA(t testing.TB, name string) *CA {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name, Organization: []string{"blockcache tests"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &CA{Cert: cert, Key: key, PEM: pemBlock("CERTIFICATE", der), t: t, next: 2}
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

// Issued is a certificate the CA signed, with its key.
type Issued struct {
	Cert            *x509.Certificate
	CertPEM, KeyPEM []byte
}

// TLS returns the certificate as crypto/tls uses it.
func (i Issued) TLS(t testing.TB) tls.Certificate {
	c, err := tls.X509KeyPair(i.CertPEM, i.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// Server issues a server certificate for localhost, 127.0.0.1 and ::1.
func (ca *CA) Server() Issued {
	return ca.issue("localhost", x509.ExtKeyUsageServerAuth)
}

// Client issues a client certificate named name.
func (ca *CA) Client(name string) Issued {
	return ca.issue(name, x509.ExtKeyUsageClientAuth)
}

func (ca *CA) issue(cn string, usage x509.ExtKeyUsage) Issued {
	ca.t.Helper()
	key := newKey(ca.t)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(ca.next),
		Subject:      pkix.Name{CommonName: cn, Organization: []string{"blockcache tests"}},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
	}
	ca.next++
	if usage == x509.ExtKeyUsageServerAuth {
		tmpl.DNSNames = []string{"localhost"}
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		ca.t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		ca.t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		ca.t.Fatal(err)
	}
	return Issued{Cert: cert, CertPEM: pemBlock("CERTIFICATE", der), KeyPEM: pemBlock("PRIVATE KEY", kder)}
}

// CRL returns a PEM CRL of the CA revoking certs.
func (ca *CA) CRL(certs ...*x509.Certificate) []byte {
	ca.t.Helper()
	tmpl := &x509.RevocationList{
		Number:     big.NewInt(1),
		ThisUpdate: time.Now().Add(-time.Hour),
		NextUpdate: time.Now().Add(24 * time.Hour),
	}
	for _, c := range certs {
		tmpl.RevokedCertificateEntries = append(tmpl.RevokedCertificateEntries,
			x509.RevocationListEntry{SerialNumber: c.SerialNumber, RevocationTime: time.Now()})
	}
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, ca.Cert, ca.Key)
	if err != nil {
		ca.t.Fatal(err)
	}
	return pemBlock("X509 CRL", der)
}

// Pool returns a pool holding the CA, for clients that verify the server.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// ServerDir writes a server directory: ca-cert.pem, server-cert.pem and
// server-key.pem, and ca-crl.pem revoking revoked if any are given.
func (ca *CA) ServerDir(dir string, revoked ...*x509.Certificate) string {
	ca.t.Helper()
	srv := ca.Server()
	files := map[string][]byte{"ca-cert.pem": ca.PEM, "server-cert.pem": srv.CertPEM, "server-key.pem": srv.KeyPEM}
	if len(revoked) > 0 {
		files["ca-crl.pem"] = ca.CRL(revoked...)
	}
	writeFiles(ca.t, dir, files)
	return dir
}

// ClientDir writes a client directory: ca-cert.pem, which the server's
// certificate must be signed by, and, if cert is not nil, client-cert.pem
// and client-key.pem.
func ClientDir(t testing.TB, dir string, serverCA *CA, cert *Issued) string {
	t.Helper()
	files := map[string][]byte{"ca-cert.pem": serverCA.PEM}
	if cert != nil {
		files["client-cert.pem"], files["client-key.pem"] = cert.CertPEM, cert.KeyPEM
	}
	writeFiles(t, dir, files)
	return dir
}

func writeFiles(t testing.TB, dir string, files map[string][]byte) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}
