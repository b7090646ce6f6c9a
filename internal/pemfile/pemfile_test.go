package pemfile

import (
	"encoding/pem"
	"strings"
	"testing"
)

func TestBlocksSkipsOtherTypes(t *testing.T) {
	var data []byte
	for _, b := range []pem.Block{{Type: "CERTIFICATE", Bytes: []byte("a")}, {Type: "X509 CRL", Bytes: []byte("b")}, {Type: "CERTIFICATE", Bytes: []byte("c")}} {
		data = append(data, pem.EncodeToMemory(&b)...)
	}
	data = append(data, "trailing junk"...)
	got := Blocks(data, "CERTIFICATE")
	if len(got) != 2 || string(got[0]) != "a" || string(got[1]) != "c" {
		t.Fatalf("Blocks = %q, want [a c]", got)
	}
	if got := Blocks(data, "X509 CRL"); len(got) != 1 || string(got[0]) != "b" {
		t.Fatalf("CRL blocks = %q, want [b]", got)
	}
}

func TestCertificatesErrors(t *testing.T) {
	if _, err := Certificates("ca.pem", []byte("junk")); err == nil || !strings.Contains(err.Error(), "ca.pem: no PEM CERTIFICATE block") {
		t.Fatalf("junk: %v", err)
	}
	bad := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("not DER")})
	if _, err := Certificates("ca.pem", bad); err == nil || !strings.Contains(err.Error(), "ca.pem: certificate 1:") {
		t.Fatalf("bad DER: %v", err)
	}
}
