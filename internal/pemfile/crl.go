package pemfile

import (
	"bytes"
	"crypto/x509"
	"fmt"
)

// Revocations are the serial numbers a set of CRLs revokes, by issuer.
type Revocations struct {
	bySubject map[string]map[string]bool // issuer's DER subject -> serial (decimal) -> revoked
}

// CRLs parses every X509 CRL block of data, read from the file path, and
// checks that each is signed by one of cas (read from caPath; both paths
// are named in the errors). A file with no CRL is an error.
func CRLs(path string, data []byte, cas []*x509.Certificate, caPath string) (Revocations, error) {
	ders := Blocks(data, "X509 CRL")
	if len(ders) == 0 {
		return Revocations{}, fmt.Errorf("CRL %s: no PEM X509 CRL block", path)
	}
	r := Revocations{bySubject: map[string]map[string]bool{}}
	for i, der := range ders {
		crl, err := x509.ParseRevocationList(der)
		if err != nil {
			return Revocations{}, fmt.Errorf("CRL %s: CRL %d: %w", path, i+1, err)
		}
		if !signedByOneOf(crl, cas) {
			return Revocations{}, fmt.Errorf("CRL %s: issued by %q, which is not signed by the CA of %s", path, crl.Issuer, caPath)
		}
		m := r.bySubject[string(crl.RawIssuer)]
		if m == nil {
			m = map[string]bool{}
			r.bySubject[string(crl.RawIssuer)] = m
		}
		for _, e := range crl.RevokedCertificateEntries {
			m[e.SerialNumber.String()] = true
		}
	}
	return r, nil
}

// Revoked returns the first certificate of chains that its issuer's CRL
// revokes, or nil. Self-signed roots are not checked: a CRL lists what
// its issuer issued, and a root issued itself.
func (r Revocations) Revoked(chains [][]*x509.Certificate) *x509.Certificate {
	for _, chain := range chains {
		for _, c := range chain {
			if bytes.Equal(c.RawIssuer, c.RawSubject) {
				continue
			}
			if r.bySubject[string(c.RawIssuer)][c.SerialNumber.String()] {
				return c
			}
		}
	}
	return nil
}

func signedByOneOf(crl *x509.RevocationList, cas []*x509.Certificate) bool {
	for _, ca := range cas {
		if crl.CheckSignatureFrom(ca) == nil {
			return true
		}
	}
	return false
}
