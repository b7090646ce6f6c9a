package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"blockcache/internal/testutil"
)

// TestRemoteCoreTLSRevokedServer: nbdkit (GnuTLS) serves with a
// certificate that the client directory's ca-crl.pem revokes. The NBD
// client bdev refuses it with -13 naming the serial and the CRL file, as
// libnbd's nbdinfo refuses it with the same directory; with a CRL that
// lists another serial, or without the CRL, the bdev is created.
func TestRemoteCoreTLSRevokedServer(t *testing.T) {
	ca := testutil.NewCA(t, "CRL test CA")
	dir := shortTempDir(t)
	srvCert := ca.Server()
	serverDir := filepath.Join(dir, "server")
	testutil.WriteFiles(t, serverDir, map[string][]byte{testutil.CACertFile: ca.PEM, testutil.ServerCertFile: srvCert.CertPEM, testutil.ServerKeyFile: srvCert.KeyPEM})
	other := ca.Client("someone else")
	revoking := testutil.ClientDir(t, filepath.Join(dir, "revoking"), ca, nil)
	crlPath := writeFile(t, revoking, "ca-crl.pem", ca.CRL(other.Cert.SerialNumber, srvCert.Cert.SerialNumber))
	allowing := testutil.ClientDir(t, filepath.Join(dir, "allowing"), ca, nil)
	writeFile(t, allowing, "ca-crl.pem", ca.CRL(other.Cert.SerialNumber))
	srv := nbdkitTCP(t, "--tls=require", "--tls-certificates="+serverDir, "memory", "16M")
	nbds := func(certs string) string { return "nbds://" + srv.addr + "/?tls-certificates=" + certs }

	if out, err := testutil.RunErr(t, nil, "nbdinfo", "--size", nbds(revoking)); err == nil {
		t.Fatalf("nbdinfo accepted the revoked server (%s); the test's CRL is wrong", strings.TrimSpace(out))
	}
	testutil.Run(t, nil, "nbdinfo", "--size", nbds(allowing))

	d := StartDaemon(t, DaemonOpts{Bare: true})
	je := d.CallErr(t, "bdev_nbd_client_create", map[string]any{"name": "K0", "uri": nbds(revoking)})
	want := fmt.Sprintf("(serial %s) is revoked by %s", srvCert.Cert.SerialNumber, crlPath)
	if je.Code != -13 || !strings.Contains(je.Data, want) {
		t.Fatalf("create with the server revoked = %d %q (%s), want -13 saying %q", je.Code, je.Message, je.Data, want)
	}
	d.Call(t, "bdev_nbd_client_create", map[string]any{"name": "K0", "uri": nbds(allowing)})
	if st, ok := d.nbdClient(t, "K0"); !ok || st.State != "connected" {
		t.Fatalf("K0 with a CRL not listing the server: %+v (listed %v)", st, ok)
	}
	d.Call(t, "bdev_nbd_client_delete", map[string]any{"name": "K0"})
	if err := os.Remove(crlPath); err != nil {
		t.Fatal(err)
	}
	d.Call(t, "bdev_nbd_client_create", map[string]any{"name": "K0", "uri": nbds(revoking)})
}
