package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"blockcache/internal/testutil"
)

// TestRemoteCoreBasics: an NBD client bdev on nbdkit's memory plugin, over
// TCP loopback and a Unix socket, as the core of a write-through volume:
// size and abilities from the server, data written through the volume is
// on the server, a flush through the volume is a flush on the server (the
// log filter sees it), save_config re-creates it, delete hot-removes the
// volume on it.
func TestRemoteCoreBasics(t *testing.T) {
	for _, transport := range []string{"tcp", "unix"} {
		t.Run(transport, func(t *testing.T) {
			logFile := filepath.Join(t.TempDir(), "nbdkit.log")
			args := []string{"--filter=log", "memory", "16M", "logfile=" + logFile}
			var srv *remoteServer
			if transport == "tcp" {
				srv = nbdkitTCP(t, args...)
			} else {
				srv = nbdkitUnix(t, args...)
			}
			d := StartDaemon(t, DaemonOpts{Bare: true})
			var name string
			d.CallInto(t, "bdev_nbd_client_create", map[string]any{"name": "Remote0", "uri": srv.uri, "connections": 2}, &name)
			if name != "Remote0" {
				t.Fatalf("create returned %q", name)
			}
			var bdevs []bdevInfo
			d.CallInto(t, "bdev_get_bdevs", map[string]any{"name": "Remote0"}, &bdevs)
			if len(bdevs) != 1 || bdevs[0].BlockSize*uint32(bdevs[0].NumBlocks) != 16<<20 || bdevs[0].ProductName != "NBD disk" {
				t.Fatalf("bdev_get_bdevs: %+v", bdevs)
			}
			if io := bdevs[0].SupportedIOTypes; !io["flush"] || !io["unmap"] || !io["write_zeroes"] {
				t.Fatalf("supported_io_types %v, want flush, unmap and write_zeroes from nbdkit", io)
			}
			st, _ := d.nbdClient(t, "Remote0")
			if st.State != "connected" || st.OpenConnections != 2 || !st.MultiConn || st.CtrlrLoss != -1 ||
				st.FastIOFail != 30 || st.ReconnectDelay != 1 || st.IOTimeout != 30 {
				t.Fatalf("driver_specific %+v, want connected on 2 connections with the defaults", st)
			}

			uri := d.cacheOver(t, "Vol0", "wt", "Cache0", 8, "Remote0")
			qemuIO(t, uri, "write -P 0x5c 1m 256k", "read -P 0x5c 1m 256k")
			testutil.Run(t, nil, "qemu-io", "-f", "raw", "-c", "flush", uri)

			got := readExport(t, srv.uri)
			want := make([]byte, 16<<20)
			copy(want[1<<20:], bytes.Repeat([]byte{0x5c}, 256<<10))
			if i := testutil.FirstDiff(got, want); i >= 0 {
				t.Fatalf("server contents differ from what was written at %d", i)
			}
			log, err := os.ReadFile(logFile)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(log), "Flush") {
				t.Fatalf("nbdkit saw no flush:\n%s", log)
			}

			raw := string(d.Call(t, "framework_get_config", map[string]any{"name": "bdev"}))
			if !strings.Contains(raw, `"bdev_nbd_client_create"`) || !strings.Contains(raw, `"connections":2`) {
				t.Fatalf("save_config lacks the NBD client: %s", raw)
			}

			d.Call(t, "bdev_nbd_client_delete", map[string]any{"name": "Remote0"})
			if _, ok := d.nbdClient(t, "Remote0"); ok {
				t.Fatal("Remote0 still listed after delete")
			}
			var vols []json.RawMessage
			d.CallInto(t, "bdev_get_bdevs", map[string]any{}, &vols)
			for _, v := range vols {
				if strings.Contains(string(v), `"name":"Vol0"`) {
					t.Fatal("Vol0 still registered after its core was deleted")
				}
			}
		})
	}
}

// TestRemoteCoreCreateErrors: what bdev_nbd_client_create answers to
// a server that is not there, refuses the export, never answers, a bad
// URI, TLS, and knobs that break SPDK's rules; the daemon stays up.
func TestRemoteCoreCreateErrors(t *testing.T) {
	d := StartDaemon(t, DaemonOpts{Bare: true})
	image := filepath.Join(t.TempDir(), "core.img")
	if err := os.WriteFile(image, make([]byte, 4<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	srv := qemuNBDUnix(t, image)

	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	go func() {
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			defer c.Close() // never greets
		}
	}()

	create := func(extra map[string]any) map[string]any {
		p := map[string]any{"name": "R"}
		for k, v := range extra {
			p[k] = v
		}
		return p
	}
	tests := []struct {
		params map[string]any
		code   int
		data   string
	}{
		{create(map[string]any{"uri": "nbd://127.0.0.1:1/x"}), -111, "connection refused"},
		{create(map[string]any{"uri": strings.Replace(srv.uri, "/disk?", "/nope?", 1)}), -6, `export "nope": the server has no such export`},
		{create(map[string]any{"uri": "nbd://" + silent.Addr().String() + "/", "io_timeout_sec": 1}), -110, "greeting"},
		{create(map[string]any{"uri": "nbds://127.0.0.1/x?tls-psk-file=/k"}), -95, "pre-shared keys"},
		{create(map[string]any{"uri": "http://h/x"}), -22, `scheme "http"`},
		{create(map[string]any{"uri": "nbd+unix:///x"}), -22, "socket=PATH"},
		{create(map[string]any{"uri": srv.uri, "reconnect_delay_sec": 0}), -22, "reconnect_delay_sec can't be 0"},
		{create(map[string]any{"uri": srv.uri, "ctrlr_loss_timeout_sec": 5, "fast_io_fail_timeout_sec": 10}), -22, "can't be more than ctrlr_loss_timeout_sec"},
		{create(map[string]any{"uri": srv.uri, "ctrlr_loss_timeout_sec": -2}), -22, "ctrlr_loss_timeout_sec"},
		{create(map[string]any{"uri": srv.uri, "connections": 0}), -22, "connections 0"},
	}
	for _, tc := range tests {
		start := time.Now()
		je := d.CallErr(t, "bdev_nbd_client_create", tc.params)
		if je.Code != tc.code || !strings.Contains(je.Data, tc.data) {
			t.Errorf("create %v = %d %q (%s), want %d with %q", tc.params, je.Code, je.Message, je.Data, tc.code, tc.data)
		}
		if el := time.Since(start); el > 10*time.Second {
			t.Errorf("create %v took %v", tc.params, el)
		}
	}
	// The working URI still works, and a second bdev of that name is -17.
	d.Call(t, "bdev_nbd_client_create", map[string]any{"name": "R", "uri": srv.uri, "ctrlr_loss_timeout_sec": 5})
	if st, _ := d.nbdClient(t, "R"); st.FastIOFail != 5 || st.ReconnectDelay != 1 || st.Export != "disk" {
		t.Fatalf("defaults under ctrlr_loss_timeout_sec 5: %+v, want fast_io_fail 5, reconnect 1", st)
	}
	if je := d.CallErr(t, "bdev_nbd_client_create", map[string]any{"name": "R", "uri": srv.uri}); je.Code != -17 {
		t.Fatalf("second create of R = %+v, want -17", je)
	}
	if je := d.CallErr(t, "bdev_nbd_client_delete", map[string]any{"name": "Nope"}); je.Code != -19 {
		t.Fatalf("delete of an unknown bdev = %+v, want -19", je)
	}
	d.Call(t, "spdk_get_version", nil)
}

// exerciseNBDClient is TestRPCCompat's part for bdev_nbd_client_create and
// bdev_nbd_client_delete: the config entry's keys, bad params, delete.
func exerciseNBDClient(t *testing.T, d *Daemon) {
	srv := nbdkitUnix(t, "memory", "4M")
	d.Call(t, "bdev_nbd_client_create", map[string]any{"name": "Nbd0", "uri": srv.uri})
	params := d.configEntry(t, "bdev_nbd_client_create", "name", "Nbd0")
	want := []string{"name", "uri", "uuid", "connections", "reconnect_delay_sec", "ctrlr_loss_timeout_sec", "fast_io_fail_timeout_sec", "io_timeout_sec"}
	if k := objectKeys(t, params); !slices.Equal(k, want) {
		t.Fatalf("config entry keys %v, want %v", k, want)
	}
	d.expectError(t, "bdev_nbd_client_create", map[string]any{"name": "Nbd1"}, -32603, "spdk_json_decode_object failed")
	d.expectError(t, "bdev_nbd_client_create", map[string]any{"name": "Nbd1", "uri": srv.uri, "bogus": 1}, -32603, "spdk_json_decode_object failed")
	d.expectError(t, "bdev_nbd_client_delete", map[string]any{}, -32603, "spdk_json_decode_object failed")
	d.Call(t, "bdev_nbd_client_delete", map[string]any{"name": "Nbd0"})
}

// TestRemoteCoreDaemonRestart: the NBD client bdev is in config.json with
// its knobs; a restart re-creates it, connected, with the same UUID, and
// the volume on it comes back with its data.
func TestRemoteCoreDaemonRestart(t *testing.T) {
	srv := nbdkitUnix(t, "memory", "16M")
	cfg := fmt.Sprintf(`{"subsystems":[{"subsystem":"bdev","config":[
 {"method":"bdev_nbd_client_create","params":{"name":"Remote0","uri":%q,"io_timeout_sec":7}},
 {"method":"bdev_malloc_create","params":{"name":"Cache0","num_blocks":16384,"block_size":512}},
 {"method":"bdev_ocf_create","params":{"name":"Vol0","mode":"wt","cache_bdev_name":"Cache0","core_bdev_name":"Remote0"}}]}]}`, srv.uri)
	path := writeFile(t, t.TempDir(), "config.json", []byte(cfg))
	dataDir := filepath.Join(t.TempDir(), "data")
	d := StartDaemon(t, DaemonOpts{DataDir: dataDir, Config: path})
	var before []bdevInfo
	d.CallInto(t, "bdev_get_bdevs", map[string]any{"name": "Remote0"}, &before)
	var uri string
	d.CallInto(t, "nbd_start_disk", map[string]any{"bdev_name": "Vol0"}, &uri)
	qemuIO(t, uri, "write -P 0x77 0 128k")
	d.Stop(t)

	d = StartDaemon(t, DaemonOpts{DataDir: dataDir})
	st, ok := d.nbdClient(t, "Remote0")
	if !ok || st.State != "connected" || st.IOTimeout != 7 {
		t.Fatalf("after a restart Remote0 is %+v (listed %v), want connected with io_timeout_sec 7", st, ok)
	}
	var after []bdevInfo
	d.CallInto(t, "bdev_get_bdevs", map[string]any{"name": "Remote0"}, &after)
	if after[0].UUID != before[0].UUID {
		t.Fatalf("UUID %s after the restart, was %s", after[0].UUID, before[0].UUID)
	}
	var disks []nbdDisk
	d.CallInto(t, "nbd_get_disks", nil, &disks)
	if len(disks) != 1 {
		d.CallInto(t, "nbd_start_disk", map[string]any{"bdev_name": "Vol0"}, &uri)
	} else {
		uri = disks[0].NBDDevice
	}
	qemuIO(t, uri, "read -P 0x77 0 128k")
}
