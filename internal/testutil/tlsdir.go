package testutil

import (
	"math/big"
	"os"
	"path/filepath"
	"testing"
)

// The file names of a TLS credentials directory as nbdkit, qemu
// (tls-creds-x509), libnbd (tls-certificates) and blockcache read them.
const (
	CACertFile     = "ca-cert.pem"
	CACRLFile      = "ca-crl.pem"
	ServerCertFile = "server-cert.pem"
	ServerKeyFile  = "server-key.pem"
	ClientCertFile = "client-cert.pem"
	ClientKeyFile  = "client-key.pem"
)

// ServerDir writes a server's credentials directory dir, creating it if
// need be, and returns it: ca-cert.pem, a fresh server certificate
// (CA.Server) in server-cert.pem and server-key.pem, and ca-crl.pem
// revoking the serials if any are given.
func (ca *CA) ServerDir(dir string, revoked ...*big.Int) string {
	ca.t.Helper()
	srv := ca.Server()
	files := map[string][]byte{CACertFile: ca.PEM, ServerCertFile: srv.CertPEM, ServerKeyFile: srv.KeyPEM}
	if len(revoked) > 0 {
		files[CACRLFile] = ca.CRL(revoked...)
	}
	WriteFiles(ca.t, dir, files)
	return dir
}

// ClientDir writes a client's credentials directory dir, creating it if
// need be, and returns it: ca-cert.pem holding serverCA, which the server's
// certificate must chain to, unless serverCA is nil, and client-cert.pem
// and client-key.pem unless cert is nil.
func ClientDir(t testing.TB, dir string, serverCA *CA, cert *Issued) string {
	t.Helper()
	files := map[string][]byte{}
	if serverCA != nil {
		files[CACertFile] = serverCA.PEM
	}
	if cert != nil {
		files[ClientCertFile], files[ClientKeyFile] = cert.CertPEM, cert.KeyPEM
	}
	WriteFiles(t, dir, files)
	return dir
}

// WriteFiles writes each file of files, by name, into dir (created, mode
// 0700, if need be) with mode 0600.
func WriteFiles(t testing.TB, dir string, files map[string][]byte) {
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
