// Package pemfile reads the PEM files TLS is configured with (the CA
// certificates and CRLs of nbdkit's and qemu's certificate directories),
// for both the NBD server and the NBD client bdev.
package pemfile

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
)

// Blocks returns the contents of every PEM block of type typ in data, in
// order; blocks of other types are skipped.
func Blocks(data []byte, typ string) [][]byte {
	var out [][]byte
	for {
		var blk *pem.Block
		blk, data = pem.Decode(data)
		if blk == nil {
			return out
		}
		if blk.Type == typ {
			out = append(out, blk.Bytes)
		}
	}
}

// Certificates parses every CERTIFICATE block of data, read from the file
// path (named in the errors). A file with none is an error.
func Certificates(path string, data []byte) ([]*x509.Certificate, error) {
	ders := Blocks(data, "CERTIFICATE")
	if len(ders) == 0 {
		return nil, fmt.Errorf("%s: no PEM CERTIFICATE block", path)
	}
	out := make([]*x509.Certificate, len(ders))
	for i, der := range ders {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("%s: certificate %d: %w", path, i+1, err)
		}
		out[i] = c
	}
	return out, nil
}
