package e2e

// The NBD client bdev over TLS (nbds://, nbds+unix://) against two
// independent servers: the daemon's own NBD server with --tls=require,
// and nbdkit (GnuTLS) with --tls=require.

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"blockcache/internal/testutil"
)

// TestRemoteCoreTLS: daemon A serves a malloc bdev with --tls=require and
// --tls-verify-peer; daemon B takes it as an OCF volume's core over
// nbds:// with a client certificate, and data written through B's volume
// is on A. nbds+unix works too; a CA that did not sign A's certificate, a
// missing client certificate, and a server without TLS (no downgrade) fail
// the create with a clear error, and B stays up.
func TestRemoteCoreTLS(t *testing.T) {
	a := startTLSDaemon(t, "require", "--tls-verify-peer")
	dir := shortTempDir(t)
	cl := a.ca.Client("daemon-b")
	certs := testutil.ClientDir(t, filepath.Join(dir, "b"), a.ca, &cl)

	b := StartDaemon(t, DaemonOpts{Bare: true})
	uri := a.tcp("nbds", certs)
	b.Call(t, "bdev_nbd_client_create", map[string]any{"name": "Core", "uri": uri})
	st, _ := b.nbdClient(t, "Core")
	if st.State != "connected" || st.URI != uri {
		t.Fatalf("driver_specific %+v, want connected with the URI %q as given", st, uri)
	}
	if cfg := string(b.Call(t, "framework_get_config", map[string]any{"name": "bdev"})); !strings.Contains(cfg, `"uri":"`+uri+`"`) {
		t.Fatalf("save_config lacks the nbds URI %q: %s", uri, cfg)
	}
	vol := b.cacheOver(t, "Vol", "wt", "Cache", 8, "Core")
	qemuIO(t, vol, "write -P 0x3c 2m 512k", "read -P 0x3c 2m 512k")
	testutil.Run(t, nil, "qemu-io", "-f", "raw", "-c", "flush", vol)
	got := readExport(t, a.tcp("nbds", certs))
	want := make([]byte, 16<<20)
	copy(want[2<<20:], bytes.Repeat([]byte{0x3c}, 512<<10))
	if i := testutil.FirstDiff(got, want); i >= 0 {
		t.Fatalf("daemon A's export differs from what was written through B at %d", i)
	}
	if !strings.Contains(a.d.Stderr(), "nbd tls established") {
		t.Fatal("daemon A logged no TLS session")
	}

	// nbds+unix: the certificate is checked against the CA (a Unix
	// socket has no host name to match).
	b.Call(t, "bdev_nbd_client_create", map[string]any{"name": "CoreU", "uri": a.unix("nbds", certs)})
	var u string
	b.CallInto(t, "nbd_start_disk", map[string]any{"bdev_name": "CoreU"}, &u)
	qemuIO(t, u, "read -P 0x3c 2m 512k", "read -P 0 0 2m")

	off := startTLSDaemon(t, "off")
	noCert := testutil.ClientDir(t, filepath.Join(dir, "nocert"), a.ca, nil)
	wrongCA := testutil.ClientDir(t, filepath.Join(dir, "wrong"), testutil.NewCA(t, "another CA"), &cl)
	for _, tc := range []struct {
		uri  string
		code int
		data string
	}{
		{a.tcp("nbds", wrongCA), -13, "certificate signed by unknown authority"},
		{a.unix("nbds", wrongCA), -13, "certificate signed by unknown authority"},
		{a.tcp("nbds", noCert), -13, "remote error"},
		{a.tcp("nbd", ""), -95, "the server requires TLS"},
		{off.tcp("nbds", certs), -95, "refused NBD_OPT_STARTTLS"},
		{off.unix("nbds", certs), -95, "refused NBD_OPT_STARTTLS"},
		{a.tcp("nbds", filepath.Join(dir, "none")), -22, "ca-cert.pem"},
	} {
		je := b.CallErr(t, "bdev_nbd_client_create", map[string]any{"name": "Bad", "uri": tc.uri})
		if je.Code != tc.code || !strings.Contains(je.Data, tc.data) {
			t.Errorf("create %s = %d %q (%s), want %d with %q", tc.uri, je.Code, je.Message, je.Data, tc.code, tc.data)
		}
	}
	if strings.Contains(off.d.Stderr(), "nbd tls established") {
		t.Fatal("the server without TLS established a TLS session")
	}
	// B is up and its volume still serves.
	qemuIO(t, vol, "read -P 0x3c 2m 512k")
}

// TestRemoteCoreTLSOtherServers: nbdkit with --tls=require (GnuTLS) as
// the core's server, with and without --tls-verify-peer, over TCP and a
// Unix socket; and qemu-nbd with x509 credentials (which verify the
// client's certificate).
func TestRemoteCoreTLSOtherServers(t *testing.T) {
	testutil.RequireTool(t, "nbdkit")
	if out := testutil.Run(t, nil, "nbdkit", "--dump-config"); !strings.Contains(out, "tls=yes") {
		t.Fatalf("nbdkit is built without TLS:\n%s", out)
	}
	ca := testutil.NewCA(t, "nbdkit test CA")
	dir := shortTempDir(t)
	server := ca.ServerDir(filepath.Join(dir, "server"))
	cl := ca.Client("daemon")
	withCert := testutil.ClientDir(t, filepath.Join(dir, "client"), ca, &cl)
	noCert := testutil.ClientDir(t, filepath.Join(dir, "nocert"), ca, nil)
	d := StartDaemon(t, DaemonOpts{Bare: true})

	for i, tc := range []struct {
		server    string
		transport string
		verify    bool
	}{{"nbdkit", "tcp", false}, {"nbdkit", "unix", true}, {"qemu-nbd", "tcp", true}} {
		t.Run(fmt.Sprintf("%s/%s/verify-peer=%v", tc.server, tc.transport, tc.verify), func(t *testing.T) {
			args := []string{"--tls=require", "--tls-certificates=" + server}
			if tc.verify {
				args = append(args, "--tls-verify-peer")
			}
			args = append(args, "memory", "16M")
			var srv *remoteServer
			var nbds string
			switch {
			case tc.server == "qemu-nbd":
				image := filepath.Join(t.TempDir(), "core.img")
				if err := os.WriteFile(image, make([]byte, 16<<20), 0o600); err != nil {
					t.Fatal(err)
				}
				port := freeTCPPort(t)
				addr := fmt.Sprintf("127.0.0.1:%d", port)
				srv = startRemote(t, nil, "qemu-nbd", "nbd://"+addr+"/disk", addr, false,
					"--object", "tls-creds-x509,id=tls0,endpoint=server,verify-peer=on,dir="+server, "--tls-creds", "tls0",
					"-f", "raw", "-t", "-e", "8", "-x", "disk", "-b", "127.0.0.1", "-p", fmt.Sprint(port), image)
				nbds = "nbds://" + addr + "/disk?tls-certificates=" + withCert
			case tc.transport == "tcp":
				srv = nbdkitTCP(t, args...)
				nbds = "nbds://" + srv.addr + "/?tls-certificates=" + withCert
			default:
				srv = nbdkitUnix(t, args...)
				nbds = "nbds+unix:///?socket=" + srv.addr + "&tls-certificates=" + withCert
			}
			if tc.verify {
				bad := strings.Replace(nbds, withCert, noCert, 1)
				if je := d.CallErr(t, "bdev_nbd_client_create", map[string]any{"name": "K", "uri": bad}); je.Code != -13 {
					t.Fatalf("create without a client certificate = %d %q (%s), want -13", je.Code, je.Message, je.Data)
				}
			}
			if je := d.CallErr(t, "bdev_nbd_client_create", map[string]any{"name": "K", "uri": srv.uri}); je.Code != -95 || !strings.Contains(je.Data, "requires TLS") {
				t.Fatalf("create with %s = %d %q (%s), want -95: the server requires TLS", srv.uri, je.Code, je.Message, je.Data)
			}
			core, cache, vol := fmt.Sprint("K", i), fmt.Sprint("C", i), fmt.Sprint("V", i)
			d.Call(t, "bdev_nbd_client_create", map[string]any{"name": core, "uri": nbds})
			d.Call(t, "bdev_malloc_create", mallocParams(cache, 8, 512))
			d.Call(t, "bdev_ocf_create", ocfParams(vol, "wt", cache, core, 0))
			var uri string
			d.CallInto(t, "nbd_start_disk", map[string]any{"bdev_name": vol}, &uri)
			qemuIO(t, uri, "write -P 0x7e 4m 256k", "read -P 0x7e 4m 256k")
			got := readExport(t, nbds)
			want := make([]byte, 16<<20)
			copy(want[4<<20:], bytes.Repeat([]byte{0x7e}, 256<<10))
			if i := testutil.FirstDiff(got, want); i >= 0 {
				t.Fatalf("%s's export differs from what was written at %d", tc.server, i)
			}

			// A restarted server is reconnected to over TLS.
			srv.kill()
			srv.start()
			waitFor(t, 15*time.Second, "reconnect over TLS", func() bool {
				st, _ := d.nbdClient(t, core)
				return st.State == "connected" && st.Reconnects > 0
			})
			qemuIO(t, uri, "write -P 0x11 8m 64k", "read -P 0x11 8m 64k")
			if got := readExport(t, nbds); !bytes.Equal(got[8<<20:8<<20+64<<10], bytes.Repeat([]byte{0x11}, 64<<10)) {
				t.Fatalf("a write after the reconnect did not reach %s", tc.server)
			}
		})
	}
}
