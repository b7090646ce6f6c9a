package testutil

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
	"sync/atomic"
	"testing"
	"time"
)

// CA is a throw-away certificate authority for tests: it issues leaf and
// intermediate certificates and CRLs, all with ECDSA P-256 keys. Its
// methods fail the test it was made for on any error.
type CA struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
	PEM  []byte // Cert in PEM
	t    testing.TB
	next atomic.Int64 // serial of the next certificate issued without one
}

// CertSpec says what a certificate the CA issues holds. Zero fields take
// the defaults given.
type CertSpec struct {
	Name        string // subject common name (the subject has nothing else)
	Serial      int64  // 0: the CA's next serial, from 2 up (the CA itself is 1)
	ExtKeyUsage []x509.ExtKeyUsage
	DNSNames    []string
	IPs         []net.IP
	// Validity; zero: from an hour ago to a day from now.
	NotBefore, NotAfter time.Time
}

// Issued is a certificate the CA signed, with its key.
type Issued struct {
	Cert            *x509.Certificate
	CertPEM, KeyPEM []byte // KeyPEM is PKCS #8
	Key             *ecdsa.PrivateKey
}

// NewCA makes a self-signed root CA, serial 1, whose subject is the common
// name name, valid from an hour ago to a day from now.
func NewCA(t testing.TB, name string) *CA {
	t.Helper()
	key := newKey(t)
	tmpl := caTemplate(CertSpec{Name: name}, big.NewInt(1))
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatalf("self-signing test CA %q: %v", name, err)
	}
	return newCA(t, der, key)
}

func newCA(t testing.TB, der []byte, key *ecdsa.PrivateKey) *CA {
	t.Helper()
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("parsing test CA certificate: %v", err)
	}
	ca := &CA{Cert: cert, Key: key, PEM: pemBlock("CERTIFICATE", der), t: t}
	ca.next.Store(2)
	return ca
}

// Server issues a server certificate for localhost: the common and DNS
// name localhost, the IPs 127.0.0.1 and ::1, server authentication.
func (ca *CA) Server() Issued {
	ca.t.Helper()
	return ca.Issue(CertSpec{
		Name:        "localhost",
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:    []string{"localhost"},
		IPs:         []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	})
}

// Client issues a client certificate with the common name name.
func (ca *CA) Client(name string) Issued {
	ca.t.Helper()
	return ca.Issue(CertSpec{Name: name, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
}

// Issue issues a leaf certificate (not a CA) as spec says, for digital
// signature and key encipherment.
func (ca *CA) Issue(spec CertSpec) Issued {
	ca.t.Helper()
	key := newKey(ca.t)
	tmpl := baseTemplate(spec, ca.serial(spec))
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment
	tmpl.ExtKeyUsage = spec.ExtKeyUsage
	tmpl.DNSNames = spec.DNSNames
	tmpl.IPAddresses = spec.IPs
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		ca.t.Fatalf("test CA %q issuing %q: %v", ca.Cert.Subject.CommonName, spec.Name, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		ca.t.Fatalf("parsing certificate %q: %v", spec.Name, err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		ca.t.Fatalf("encoding the key of %q: %v", spec.Name, err)
	}
	return Issued{Cert: cert, CertPEM: pemBlock("CERTIFICATE", der), KeyPEM: pemBlock("PRIVATE KEY", kder), Key: key}
}

// Intermediate issues an intermediate CA as spec says (its name, serial
// and validity; the rest is ignored) and returns it, ready to issue
// certificates and CRLs of its own.
func (ca *CA) Intermediate(spec CertSpec) *CA {
	ca.t.Helper()
	key := newKey(ca.t)
	tmpl := caTemplate(spec, ca.serial(spec))
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		ca.t.Fatalf("test CA %q issuing intermediate %q: %v", ca.Cert.Subject.CommonName, spec.Name, err)
	}
	return newCA(ca.t, der, key)
}

// CRL returns a PEM CRL of the CA, number 1, valid from an hour ago to a
// day from now, revoking the certificates of the serials (of this CA's
// issue or not: a CRL can list any serial).
func (ca *CA) CRL(serials ...*big.Int) []byte {
	ca.t.Helper()
	now := time.Now()
	tmpl := &x509.RevocationList{Number: big.NewInt(1), ThisUpdate: now.Add(-time.Hour), NextUpdate: now.Add(24 * time.Hour)}
	for _, s := range serials {
		tmpl.RevokedCertificateEntries = append(tmpl.RevokedCertificateEntries,
			x509.RevocationListEntry{SerialNumber: s, RevocationTime: now})
	}
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, ca.Cert, ca.Key)
	if err != nil {
		ca.t.Fatalf("test CA %q signing a CRL: %v", ca.Cert.Subject.CommonName, err)
	}
	return pemBlock("X509 CRL", der)
}

// Pool returns a pool holding the CA, to verify what it issued.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// TLS returns the certificate as crypto/tls uses it.
func (i Issued) TLS(t testing.TB) tls.Certificate {
	t.Helper()
	c, err := tls.X509KeyPair(i.CertPEM, i.KeyPEM)
	if err != nil {
		t.Fatalf("certificate %q as a TLS key pair: %v", i.Cert.Subject.CommonName, err)
	}
	return c
}

// serial is spec's serial, or the CA's next one when spec has none.
func (ca *CA) serial(spec CertSpec) *big.Int {
	if spec.Serial != 0 {
		return big.NewInt(spec.Serial)
	}
	return big.NewInt(ca.next.Add(1) - 1)
}

func caTemplate(spec CertSpec, serial *big.Int) *x509.Certificate {
	tmpl := baseTemplate(spec, serial)
	tmpl.IsCA = true
	tmpl.BasicConstraintsValid = true
	tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature
	return tmpl
}

// baseTemplate is spec's subject and validity, with the serial.
func baseTemplate(spec CertSpec, serial *big.Int) *x509.Certificate {
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: spec.Name},
		NotBefore:    spec.NotBefore,
		NotAfter:     spec.NotAfter,
	}
	if tmpl.NotBefore.IsZero() {
		tmpl.NotBefore = now.Add(-time.Hour)
	}
	if tmpl.NotAfter.IsZero() {
		tmpl.NotAfter = now.Add(24 * time.Hour)
	}
	return tmpl
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("generating a test key: %v", err)
	}
	return key
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}
