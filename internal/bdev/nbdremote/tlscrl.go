package nbdremote

import (
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"blockcache/internal/pemfile"
)

// crlCheck refuses server certificates that the certificate directory's
// CRL (TLSCRLFile) revokes, as qemu's and libnbd's GnuTLS clients do with
// the same file.
type crlCheck struct {
	path    string
	revoked pemfile.Revocations
}

// readCRL reads the CRL at path, each of whose lists must be signed by one
// of cas (read from caPath). A missing file is no CRL: nil, nil. A file
// that cannot be read or used is ErrTLSCredentials.
func readCRL(path string, cas []*x509.Certificate, caPath string) (*crlCheck, error) {
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("CRL: %v: %w", err, ErrTLSCredentials)
	}
	r, err := pemfile.CRLs(path, b, cas, caPath)
	if err != nil {
		return nil, fmt.Errorf("%v: %w", err, ErrTLSCredentials)
	}
	return &crlCheck{path: path, revoked: r}, nil
}

// check fails if a certificate of the verified chains is revoked, naming
// it, its serial and the CRL file.
func (c *crlCheck) check(chains [][]*x509.Certificate) error {
	r := c.revoked.Revoked(chains)
	if r == nil {
		return nil
	}
	what := "server certificate"
	if len(chains) > 0 && len(chains[0]) > 0 && r != chains[0][0] {
		what = "certificate in the server's chain"
	}
	return fmt.Errorf("%s %q (serial %s) is revoked by %s", what, r.Subject, r.SerialNumber, c.path)
}
