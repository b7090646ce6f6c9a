package e2e

// Bad input on both sockets: malformed JSON-RPC, bad params, deleting bdevs
// that are in use, misaligned NBD requests and clients that vanish halfway.

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"blockcache/internal/jsonrpc"
	"blockcache/internal/nbd/nbdclient"
	"blockcache/internal/rpcclient"
)

// rawRPC is a JSON-RPC connection written byte by byte.
type rawRPC struct {
	t   *testing.T
	c   net.Conn
	dec *json.Decoder
}

func (d *Daemon) rawRPC(t *testing.T) *rawRPC {
	t.Helper()
	c, err := net.Dial("unix", d.Sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawRPC{t: t, c: c, dec: json.NewDecoder(c)}
}

func (r *rawRPC) send(s string) {
	r.t.Helper()
	if _, err := r.c.Write([]byte(s)); err != nil {
		r.t.Fatalf("write %q: %v", s, err)
	}
}

// reply reads one JSON value.
func (r *rawRPC) reply() json.RawMessage {
	r.t.Helper()
	r.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var raw json.RawMessage
	if err := r.dec.Decode(&raw); err != nil {
		r.t.Fatalf("reading a reply: %v", err)
	}
	return raw
}

type rawReply struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id"`
	Result  json.RawMessage `json:"result"`
	Error   *jsonrpc.Error  `json:"error"`
}

// expectErrorReply reads a reply and checks its id and error code.
func (r *rawRPC) expectErrorReply(id string, code int) rawReply {
	r.t.Helper()
	raw := r.reply()
	var rep rawReply
	if err := json.Unmarshal(raw, &rep); err != nil || rep.JSONRPC != "2.0" || string(rep.ID) != id || rep.Error == nil || rep.Error.Code != code {
		r.t.Fatalf("reply %s, want an error with code %d and id %s", raw, code, id)
	}
	return rep
}

// TestMalformedJSONRPC sends broken requests on raw connections and checks
// the error replies and that the daemon goes on serving everyone.
func TestMalformedJSONRPC(t *testing.T) {
	t.Parallel()
	d := StartDaemon(t, DaemonOpts{Bare: true})

	// A client that sent half a request and waits does not hold up others.
	idle := d.rawRPC(t)
	idle.send(`{"jsonrpc":"2.0","method":"spdk_get_`)
	d.Call(t, "spdk_get_version", nil)

	bad := d.rawRPC(t)
	bad.send(`{"jsonrpc":"2.0","method":"spdk_get_version","id":1,}`)
	rep := bad.expectErrorReply("null", -32700)
	if rep.Error.Message != "Parse error" {
		t.Fatalf("parse error message %q", rep.Error.Message)
	}
	// The stream cannot be resynchronised after a parse error: SPDK closes
	// the connection.
	bad.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := bad.c.Read(make([]byte, 1)); err == nil {
		t.Fatalf("connection still open after a parse error (read %d bytes)", n)
	}
	d.Call(t, "spdk_get_version", nil)

	r := d.rawRPC(t)
	for _, c := range []struct {
		req  string
		id   string
		code int
		msg  string
	}{
		// A top-level scalar ends at the next byte, hence the space.
		{`"hello" `, "null", -32600, "Invalid request"},
		{`{"jsonrpc":"1.0","method":"spdk_get_version","id":2}`, "2", -32600, "Invalid request"},
		{`{"jsonrpc":"2.0","method":"spdk_get_version","id":3,"extra":1}`, "3", -32600, "Invalid request"},
		{`{"jsonrpc":"2.0","id":4}`, "4", -32600, "Invalid request"},
		{`{"jsonrpc":"2.0","method":7,"id":5}`, "5", -32600, "Invalid request"},
		{`{"jsonrpc":"2.0","method":"bdev_get_bdevs","id":6,"params":"Malloc0"}`, "6", -32600, "Invalid request"},
		{`{"jsonrpc":"2.0","method":"no_such_method","id":7}`, "7", -32601, "Method not found"},
		{`{"jsonrpc":"2.0","method":"bdev_malloc_create","id":8,"params":[1,2]}`, "8", -32603, "spdk_json_decode_object failed"},
		{`[]`, "null", -32600, "Invalid request"},
	} {
		r.send(c.req)
		if rep := r.expectErrorReply(c.id, c.code); rep.Error.Message != c.msg {
			t.Fatalf("%s: message %q, want %q", c.req, rep.Error.Message, c.msg)
		}
	}
	// SPDK HEAD accepts a request without "jsonrpc".
	r.send(`{"method":"framework_wait_init","id":"x"}`)
	if raw := r.reply(); compactJSON(t, raw) != `{"jsonrpc":"2.0","id":"x","result":true}` {
		t.Fatalf("request without \"jsonrpc\": %s", raw)
	}
	// A notification (no id) gets no reply; the next request does.
	r.send(`{"jsonrpc":"2.0","method":"bdev_malloc_create","params":{"name":"Notified","num_blocks":2048,"block_size":512}}`)
	r.send(`{"jsonrpc":"2.0","method":"bdev_get_bdevs","id":9,"params":{"name":"Notified"}}`)
	raw := r.reply()
	var ok rawReply
	if json.Unmarshal(raw, &ok) != nil || string(ok.ID) != "9" || ok.Error != nil || !strings.Contains(string(ok.Result), `"Notified"`) {
		t.Fatalf("after a notification: %s", raw)
	}
	// A batch is answered with an array in order.
	r.send(`[{"jsonrpc":"2.0","method":"spdk_get_version","id":10},{"jsonrpc":"2.0","method":"nope","id":11}]`)
	var batch []rawReply
	if raw := r.reply(); json.Unmarshal(raw, &batch) != nil || len(batch) != 2 || string(batch[0].ID) != "10" || batch[0].Error != nil ||
		string(batch[1].ID) != "11" || batch[1].Error == nil || batch[1].Error.Code != -32601 {
		t.Fatalf("batch reply: %s", raw)
	}
	// Garbage that is not even UTF-8, on its own connection.
	g := d.rawRPC(t)
	g.send("\xff\xfe{{{\x00")
	g.expectErrorReply("null", -32700)

	// A client that goes away while its call waits does not disturb the
	// daemon.
	gone := d.rawRPC(t)
	gone.send(`{"jsonrpc":"2.0","method":"bdev_get_bdevs","id":1,"params":{"name":"Never","timeout":2000}}`)
	gone.c.Close()
	// And one still waiting does not hold up shutdown.
	waiting := d.rawRPC(t)
	waiting.send(`{"jsonrpc":"2.0","method":"bdev_get_bdevs","id":1,"params":{"name":"Never","timeout":600000}}`)

	idle.send(`version","id":12}`)
	if rep := idle.reply(); !strings.Contains(string(rep), `"SPDK v26.05-pre`) {
		t.Fatalf("a request sent in two pieces: %s", rep)
	}
	d.Call(t, "bdev_malloc_delete", map[string]any{"name": "Notified"})
	start := time.Now()
	d.Stop(t)
	if el := time.Since(start); el > 10*time.Second {
		t.Fatalf("shutdown with an RPC waiting took %v", el)
	}
}

// TestBadParams sends params that are missing, unknown or of the wrong
// type to each module, checks each module's error reply, and that nothing
// was created.
func TestBadParams(t *testing.T) {
	t.Parallel()
	d := StartDaemon(t, DaemonOpts{Bare: true})
	d.Call(t, "bdev_malloc_create", mallocParams("Base", 4, 512))
	const (
		decode  = "spdk_json_decode_object failed"
		invalid = "Invalid parameters"
	)
	for _, c := range []struct {
		method string
		params string
		code   int
		msg    string
	}{
		{"bdev_malloc_create", `{"block_size":512}`, -32603, decode},
		{"bdev_malloc_create", `{"num_blocks":"16","block_size":512}`, -32603, decode},
		{"bdev_malloc_create", `{"num_blocks":-1,"block_size":512}`, -32603, decode},
		{"bdev_malloc_create", `{"num_blocks":1.5,"block_size":512}`, -32603, decode},
		{"bdev_malloc_create", `{"num_blocks":16,"block_size":512,"name":null}`, -32603, decode},
		{"bdev_malloc_create", `{"num_blocks":16,"block_size":512,"Name":"x"}`, -32603, decode},
		{"bdev_malloc_create", `{"num_blocks":0,"block_size":512,"name":"Zero"}`, -22, "Invalid argument"},
		{"bdev_malloc_delete", `{}`, -32603, decode},
		{"bdev_malloc_delete", `{"name":1}`, -32603, decode},
		{"bdev_aio_create", `{"name":"A"}`, -32603, decode},
		{"bdev_aio_create", `{"name":"A","filename":"/nonexistent/x","readonly":"no"}`, -32603, decode},
		{"bdev_null_create", `{"name":"N","num_blocks":16}`, -32603, decode},
		{"bdev_delay_create", `{"base_bdev_name":"Base","name":"D"}`, -32603, decode},
		{"bdev_delay_create", `{"base_bdev_name":"Nope","name":"D","avg_read_latency":1,"p99_read_latency":1,"avg_write_latency":1,"p99_write_latency":1}`, -19, "No such device"},
		{"bdev_error_create", `{}`, -32603, decode},
		{"bdev_error_create", `{"base_name":"Nope"}`, -19, "No such device"},
		{"bdev_error_inject_error", `{"name":"EE_Base"}`, -32603, decode},
		{"bdev_get_bdevs", `{"timeout":"x"}`, -32603, decode},
		{"bdev_get_bdevs", `{"name":["Base"]}`, -32603, decode},
		{"bdev_ocf_create", `{"name":5,"mode":"wt","cache_bdev_name":"a","core_bdev_name":"b"}`, -32602, invalid},
		{"bdev_ocf_create", `{"name":"O","mode":"wt","cache_bdev_name":"a","core_bdev_name":"b","cache_line_size":"4"}`, -32602, invalid},
		{"bdev_ocf_create", `{"name":"O","mode":"wt","cache_bdev_name":"a","core_bdev_name":"b","cache_line_size":-4}`, -32602, invalid},
		{"bdev_ocf_create", `{"name":"O","mode":"wt","cache_bdev_name":"a"}`, -32602, invalid},
		{"bdev_ocf_create", `{"name":"","mode":"wt","cache_bdev_name":"a","core_bdev_name":"b"}`, -32603, "Could not create OCF vbdev: -22"},
		{"bdev_ocf_create", `{"name":"O","mode":"wt","cache_bdev_name":"Base","core_bdev_name":"Base"}`, -32603, "Could not create OCF vbdev: -1"},
		{"bdev_ocf_delete", `{}`, -32602, invalid},
		{"bdev_ocf_get_bdevs", `{"name":1}`, -32602, invalid},
		{"bdev_ocf_get_stats", `{"name":"O","extra":1}`, -32602, invalid},
		{"bdev_ocf_reset_stats", `{}`, -32602, invalid},
		{"bdev_ocf_set_cache_mode", `{"name":"O"}`, -32602, invalid},
		{"nbd_start_disk", `{"bdev_name":1}`, -32603, decode},
		{"nbd_stop_disk", `{"nbd_device":true}`, -32603, decode},
		{"nbd_get_disks", `{"nbd_device":1}`, -32603, decode},
		{"framework_get_config", `{}`, -32602, invalid},
		{"framework_get_config", `{"name":"bdev","with_batches":"no"}`, -32602, invalid},
		{"framework_get_subsystems", `{"x":1}`, -32602, "framework_get_subsystems method requires no parameters"},
		{"spdk_kill_instance", `{}`, -32602, invalid},
		{"spdk_kill_instance", `{"sig_name":15}`, -32602, invalid},
	} {
		d.markCalled(c.method)
		res, err := d.Client(t).CallRaw(c.method, json.RawMessage(c.params))
		je := replyError(t, c.method, json.RawMessage(c.params), res, err)
		if je.Code != c.code || je.Message != c.msg {
			t.Errorf("%s %s: got {%d, %q} (data %q), want {%d, %q}", c.method, c.params, je.Code, je.Message, je.Data, c.code, c.msg)
		}
	}
	if names := d.bdevNames(t); len(names) != 1 || names[0] != "Base" {
		t.Fatalf("bdevs after failed creates: %v", names)
	}
	if vb := d.ocfBdevs(t, ""); len(vb) != 0 {
		t.Fatalf("OCF vbdevs after failed creates: %+v", vb)
	}
	d.expectClaimed(t, "Base", false)
	d.Stop(t)
}

// nbdDial connects the Go test client to an export.
func (d *Daemon) nbdDial(t *testing.T, export string) *nbdclient.Client {
	t.Helper()
	c, err := nbdclient.Dial("tcp", d.NBDAddr, nbdclient.Options{Export: export, StructuredReplies: true})
	if err != nil {
		t.Fatalf("nbd connect to %s: %v", export, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// expectConnectionFails checks that IO on c fails (an error reply or the
// connection ending) within a few seconds rather than hanging.
func expectConnectionFails(t *testing.T, c *nbdclient.Client, what string) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- c.ReadAt(make([]byte, 4096), 0) }()
	select {
	case err := <-done:
		if err == nil {
			t.Fatalf("%s: a read on the open connection still succeeds", what)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: a read on the open connection hangs", what)
	}
}

// TestDeleteBdevInUse deletes bdevs that are claimed or exported while
// clients have them open.
func TestDeleteBdevInUse(t *testing.T) {
	t.Parallel()
	d := StartDaemon(t, DaemonOpts{Bare: true})

	// An exported plain bdev: deleting it stops the export.
	d.Call(t, "bdev_malloc_create", mallocParams("Exp", 4, 512))
	d.Call(t, "nbd_start_disk", map[string]any{"bdev_name": "Exp"})
	c := d.nbdDial(t, "Exp")
	if err := c.WriteAt(bytes.Repeat([]byte{1}, 4096), 0, 0); err != nil {
		t.Fatal(err)
	}
	expectJSON(t, "bdev_malloc_delete of an exported bdev", d.Call(t, "bdev_malloc_delete", map[string]any{"name": "Exp"}), "true")
	expectJSON(t, "nbd_get_disks", d.Call(t, "nbd_get_disks", nil), "[]")
	expectConnectionFails(t, c, "exported bdev deleted")
	if _, err := nbdclient.Dial("tcp", d.NBDAddr, nbdclient.Options{Export: "Exp"}); err == nil {
		t.Fatal("a new connection to the export of a deleted bdev succeeded")
	}

	// The core of an exported vbdev, under IO.
	uri := d.createCachedVolume(t, "Hot", "wb", 8, 16, 0)
	c = d.nbdDial(t, "Hot")
	stop := make(chan struct{})
	ioDone := make(chan error, 1)
	go func() {
		buf := bytes.Repeat([]byte{7}, 65536)
		for i := uint64(0); ; i++ {
			select {
			case <-stop:
				ioDone <- nil
				return
			default:
			}
			if err := c.WriteAt(buf, (i%256)*65536, 0); err != nil {
				ioDone <- err
				return
			}
		}
	}()
	time.Sleep(100 * time.Millisecond)
	d.Call(t, "bdev_malloc_delete", map[string]any{"name": "Hot_core"})
	select {
	case err := <-ioDone:
		if err == nil {
			t.Fatal("IO loop stopped without an error")
		}
	case <-time.After(10 * time.Second):
		close(stop)
		t.Fatal("IO on a vbdev whose core was hot-removed neither fails nor ends")
	}
	d.expectError(t, "bdev_get_bdevs", map[string]any{"name": "Hot"}, -19, "No such device")
	// The vbdev waits for its core on its cache, which keeps the core's
	// dirty data and stays claimed (docs/lifecycle.md, "Removal").
	if vb := d.ocfBdevs(t, "Hot"); len(vb) != 1 || vb[0].Started || vb[0].Core.Attached || !vb[0].Cache.Attached {
		t.Fatalf("Hot after its core was hot-removed: %+v, want waiting on its cache", vb)
	}
	d.expectClaimed(t, "Hot_cache", true)
	var disks []nbdDisk
	d.CallInto(t, "nbd_get_disks", map[string]any{}, &disks)
	if len(disks) != 0 {
		t.Fatalf("export of the hot-removed vbdev %s still listed: %+v", uri, disks)
	}

	// The core back: Hot starts again by itself, and its pending export
	// with it. bdev_ocf_delete of an exported vbdev stops the export for
	// good.
	d.Call(t, "bdev_malloc_create", mallocParams("Hot_core", 16, 512))
	if vb := d.ocfBdevs(t, "Hot"); len(vb) != 1 || !vb[0].Started {
		t.Fatalf("Hot once its core is back: %+v, want started", vb)
	}
	nbdinfoWorks(t, uri)
	c = d.nbdDial(t, "Hot")
	if err := c.WriteAt(bytes.Repeat([]byte{9}, 4096), 0, 0); err != nil {
		t.Fatal(err)
	}
	d.Call(t, "bdev_ocf_delete", map[string]any{"name": "Hot"})
	expectConnectionFails(t, c, "vbdev deleted")
	expectJSON(t, "nbd_get_disks after bdev_ocf_delete", d.Call(t, "nbd_get_disks", nil), "[]")
	d.expectClaimed(t, "Hot_cache", false)
	d.expectClaimed(t, "Hot_core", false)

	// The base of a delay bdev: the delay bdev goes with it.
	d.Call(t, "bdev_delay_create", delayParams("Hot_core", "Slow", 1, 1))
	d.Call(t, "bdev_malloc_delete", map[string]any{"name": "Hot_core"})
	d.expectError(t, "bdev_get_bdevs", map[string]any{"name": "Slow"}, -19, "No such device")
	d.expectError(t, "bdev_delay_delete", map[string]any{"name": "Slow"}, -19, "No such device")
	if names := d.bdevNames(t); len(names) != 1 || names[0] != "Hot_cache" {
		t.Fatalf("bdevs left: %v", names)
	}
	d.Stop(t)
}

// TestMisalignedNBDIO sends requests the export cannot serve and checks
// the errors and that the connection keeps working.
func TestMisalignedNBDIO(t *testing.T) {
	t.Parallel()
	d := StartDaemon(t, DaemonOpts{Bare: true})
	d.createCachedVolume(t, "Align", "wb", 8, 16, 0)
	const size = 16 << 20
	for _, structured := range []bool{true, false} {
		c, err := nbdclient.Dial("tcp", d.NBDAddr, nbdclient.Options{Export: "Align", StructuredReplies: structured})
		if err != nil {
			t.Fatal(err)
		}
		if c.Export.Size != size || c.Export.MinBlock != 512 {
			t.Fatalf("export info %+v", c.Export)
		}
		data := randomBytes(4, 8192)
		if err := c.WriteAt(data, 4096, 0); err != nil {
			t.Fatal(err)
		}
		for _, r := range []struct {
			req   nbdclient.Request
			errno syscall.Errno
		}{
			{nbdclient.Request{Type: nbdclient.CmdRead, Offset: 100, Length: 512}, syscall.EINVAL},
			{nbdclient.Request{Type: nbdclient.CmdRead, Offset: 512, Length: 100}, syscall.EINVAL},
			{nbdclient.Request{Type: nbdclient.CmdWrite, Offset: 4096, Length: 100, Payload: make([]byte, 100)}, syscall.EINVAL},
			{nbdclient.Request{Type: nbdclient.CmdWrite, Offset: 4097, Length: 512, Payload: make([]byte, 512)}, syscall.EINVAL},
			{nbdclient.Request{Type: nbdclient.CmdRead, Offset: size - 512, Length: 1024}, syscall.EINVAL},
			{nbdclient.Request{Type: nbdclient.CmdWrite, Offset: size - 512, Length: 1024, Payload: make([]byte, 1024)}, syscall.ENOSPC},
			{nbdclient.Request{Type: nbdclient.CmdTrim, Offset: 4096 + 1, Length: 512}, syscall.EINVAL},
			{nbdclient.Request{Type: nbdclient.CmdWriteZeroes, Offset: 100, Length: 4096}, syscall.EINVAL},
		} {
			rep, err := c.Do(r.req)
			if err != nil {
				t.Fatalf("structured=%v %+v: connection failed: %v", structured, r.req, err)
			}
			if !errors.Is(rep.Err, r.errno) {
				t.Fatalf("structured=%v type %d off %d len %d: got %v, want %v", structured, r.req.Type, r.req.Offset, r.req.Length, rep.Err, r.errno)
			}
			got := make([]byte, 8192)
			if err := c.ReadAt(got, 4096); err != nil || !bytes.Equal(got, data) {
				t.Fatalf("structured=%v: after a rejected request the data reads back wrong (err %v)", structured, err)
			}
		}
		if err := c.Disconnect(); err != nil {
			t.Fatalf("disconnect: %v", err)
		}
	}
	d.Stop(t)
}

// TestNBDClientVanishes cuts connections in the middle of the handshake and
// of a WRITE's payload, and checks the daemon serves others and shuts down
// cleanly.
func TestNBDClientVanishes(t *testing.T) {
	t.Parallel()
	d := StartDaemon(t, DaemonOpts{Bare: true})
	uri := d.createCachedVolume(t, "Cut", "wb", 8, 16, 0)

	// A healthy client with a request in flight across the disruptions.
	healthy := d.nbdDial(t, "Cut")
	want := randomBytes(5, 65536)
	if err := healthy.WriteAt(want, 0, 0); err != nil {
		t.Fatal(err)
	}

	// Gone during the handshake.
	for i := 0; i < 3; i++ {
		nc, err := net.Dial("tcp", d.NBDAddr)
		if err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(nc)
		if _, err := br.Peek(18); err != nil {
			t.Fatalf("greeting: %v", err)
		}
		if i > 0 {
			nc.Write([]byte{0, 0}) // half of the client flags
		}
		nc.Close()
	}

	// Gone in the middle of a WRITE's payload, after a complete request.
	for _, partial := range []int{0, 1000, 65535} {
		c, err := nbdclient.Dial("tcp", d.NBDAddr, nbdclient.Options{Export: "Cut", StructuredReplies: true})
		if err != nil {
			t.Fatal(err)
		}
		if err := c.WriteAt(bytes.Repeat([]byte{0xee}, 4096), 1<<20, 0); err != nil {
			t.Fatal(err)
		}
		hdr := make([]byte, 28)
		binary.BigEndian.PutUint32(hdr[0:4], 0x25609513)
		binary.BigEndian.PutUint16(hdr[6:8], nbdclient.CmdWrite)
		binary.BigEndian.PutUint64(hdr[8:16], 99)
		binary.BigEndian.PutUint64(hdr[16:24], 2<<20)
		binary.BigEndian.PutUint32(hdr[24:28], 65536)
		if err := c.SendRaw(append(hdr, bytes.Repeat([]byte{0xdd}, partial)...)); err != nil {
			t.Fatal(err)
		}
		c.Close()
	}

	// Everyone else is still served, and the torn write did not land.
	got := make([]byte, 65536)
	if err := healthy.ReadAt(got, 0); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("the healthy connection after others vanished: err %v, data equal %v", err, bytes.Equal(got, want))
	}
	qemuIO(t, uri, "read -P 0xee 1m 4k", "read -P 0 2m 64k", "write -P 0x3c 3m 64k", "read -P 0x3c 3m 64k")
	d.Call(t, "bdev_ocf_get_stats", map[string]any{"name": "Cut"})
	if err := healthy.Disconnect(); err != nil {
		t.Fatal(err)
	}
	d.Stop(t)
}

// TestHotRemoveCacheUnderIO deletes the cache bdev shared by two
// write-through volumes while a client writes to each: the writes must end
// in errors rather than hang, both volumes must go, and each core must hold
// every write that was acknowledged.
func TestHotRemoveCacheUnderIO(t *testing.T) {
	t.Parallel()
	d := StartDaemon(t, DaemonOpts{Bare: true})
	d.Call(t, "bdev_malloc_create", mallocParams("SharedCache", 8, 512))
	const blocks = 1024 // 4 MiB of 4 KiB blocks written over and over
	type writer struct {
		vol      string
		acked    map[uint64]uint64 // block -> last acknowledged value
		inflight [2]uint64         // block, value of the write not yet answered
		err      error
	}
	writers := []*writer{{vol: "HotA"}, {vol: "HotB"}}
	done := make(chan *writer, len(writers))
	for _, w := range writers {
		d.Call(t, "bdev_malloc_create", mallocParams(w.vol+"_core", 8, 512))
		d.Call(t, "bdev_ocf_create", ocfParams(w.vol, "wt", "SharedCache", w.vol+"_core", 0))
		d.Call(t, "nbd_start_disk", map[string]any{"bdev_name": w.vol})
		c := d.nbdDial(t, w.vol)
		w.acked = map[uint64]uint64{}
		go func() {
			buf := make([]byte, 4096)
			for v := uint64(1); ; v++ {
				blk := (v * 7919) % blocks
				for i := 0; i < len(buf); i += 8 {
					binary.LittleEndian.PutUint64(buf[i:], v)
				}
				w.inflight = [2]uint64{blk, v}
				if err := c.WriteAt(buf, blk*4096, 0); err != nil {
					w.err = err
					done <- w
					return
				}
				w.acked[blk] = v
			}
		}()
	}
	time.Sleep(200 * time.Millisecond)
	d.Call(t, "bdev_malloc_delete", map[string]any{"name": "SharedCache"})
	for range writers {
		select {
		case w := <-done:
			if len(w.acked) == 0 {
				t.Fatalf("%s: no write was acknowledged before the removal (%v)", w.vol, w.err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("writes to a volume whose cache was hot-removed neither fail nor end")
		}
	}
	if vb := d.ocfBdevs(t, ""); len(vb) != 0 {
		t.Fatalf("vbdevs after the cache was removed: %+v", vb)
	}
	expectJSON(t, "nbd_get_disks", d.Call(t, "nbd_get_disks", nil), "[]")
	for _, w := range writers {
		d.expectClaimed(t, w.vol+"_core", false)
		d.Call(t, "nbd_start_disk", map[string]any{"bdev_name": w.vol + "_core"})
		c := d.nbdDial(t, w.vol+"_core")
		core := make([]byte, blocks*4096)
		if err := c.ReadAt(core, 0); err != nil {
			t.Fatal(err)
		}
		for blk, v := range w.acked {
			got := binary.LittleEndian.Uint64(core[blk*4096:])
			if got != v && !(w.inflight[0] == blk && w.inflight[1] == got) {
				t.Fatalf("%s: block %d holds write %d on the core, but write %d was acknowledged (write-through)", w.vol, blk, got, v)
			}
		}
	}
	d.Stop(t)
}

// TestCacheDeviceErrors puts a write-back cache on an error-injection bdev
// (SPDK's bdev_error) and fails cache reads and writes under a client: no
// request may fail or return stale data while the core or the dirty data
// can serve it, the errors must be counted, and the fallback pass-through
// threshold must trip.
func TestCacheDeviceErrors(t *testing.T) {
	t.Parallel()
	d := StartDaemon(t, DaemonOpts{Bare: true})
	d.Call(t, "bdev_malloc_create", mallocParams("FlakyBase", 8, 512))
	d.Call(t, "bdev_malloc_create", mallocParams("FlakyCore", 16, 512))
	d.Call(t, "bdev_error_create", map[string]any{"base_name": "FlakyBase"})
	d.Call(t, "bdev_ocf_create", ocfParams("Flaky", "wb", "EE_FlakyBase", "FlakyCore", 0))
	uri := d.URI("Flaky")
	d.Call(t, "nbd_start_disk", map[string]any{"bdev_name": "Flaky"})
	qemuIO(t, uri, "write -P 0xa1 0 1m")
	if s := d.stats(t, "Flaky"); s.Usage.Dirty.Count == 0 {
		t.Fatalf("no dirty data after a wb write: %+v", s.Usage)
	}
	inject := func(ioType string, n int) {
		t.Helper()
		d.Call(t, "bdev_error_inject_error", map[string]any{"name": "EE_FlakyBase", "io_type": ioType, "error_type": "failure", "num": n})
	}
	// Failed cache writes: the data goes to the core instead.
	inject("write", 2)
	qemuIO(t, uri, "write -P 0xb2 1m 256k", "write -P 0xb3 2m 256k", "read -P 0xb2 1m 256k", "read -P 0xb3 2m 256k")
	// A failed read of dirty data is retried, never answered from the core.
	inject("read", 1)
	qemuIO(t, uri, "read -P 0xa1 0 1m")
	var errs struct {
		Errors struct {
			CacheRd statLeaf `json:"cache_volume_rd"`
			CacheWr statLeaf `json:"cache_volume_wr"`
			Total   statLeaf `json:"total"`
		} `json:"errors"`
	}
	d.CallInto(t, "bdev_ocf_get_stats", map[string]any{"name": "Flaky"}, &errs)
	if errs.Errors.CacheWr.Count == 0 || errs.Errors.CacheRd.Count == 0 || errs.Errors.Total.Count < 2 {
		t.Fatalf("cache device errors not counted: %+v", errs.Errors)
	}

	// Fallback pass-through after 3 more errors.
	expectJSON(t, "bdev_ocf_set_fallback_pt", d.Call(t, "bdev_ocf_set_fallback_pt", map[string]any{"name": "Flaky", "threshold": 3}), "true")
	d.expectError(t, "bdev_ocf_set_fallback_pt", map[string]any{"name": "Flaky", "threshold": 1000001}, -32602, "threshold 1000001 out of range (allowed 0..1000000)")
	d.expectError(t, "bdev_ocf_set_fallback_pt", map[string]any{"name": "Nope", "threshold": 3}, -32602, "No such device")
	d.expectError(t, "bdev_ocf_set_fallback_pt", map[string]any{"name": "Flaky"}, -32602, "Invalid parameters")
	fallback := func() bool {
		t.Helper()
		var vb []struct {
			FallbackPT *bool `json:"fallback_pt"`
		}
		d.CallInto(t, "bdev_ocf_get_bdevs", map[string]any{"name": "Flaky"}, &vb)
		if len(vb) != 1 || vb[0].FallbackPT == nil {
			t.Fatalf("bdev_ocf_get_bdevs Flaky: %+v", vb)
		}
		return *vb[0].FallbackPT
	}
	if fallback() {
		t.Fatal("fallback pass-through before any error")
	}
	inject("write", 3)
	qemuIO(t, uri, "write -P 0xc4 4m 64k", "write -P 0xc5 5m 64k", "write -P 0xc6 6m 64k", "write -P 0xc7 7m 64k")
	if !fallback() {
		t.Fatal("no fallback pass-through after 3 cache write errors with threshold 3")
	}
	b, _ := d.getBdev(t, "Flaky")
	if !strings.Contains(string(b.DriverSpecific), `"fallback_pt":true`) {
		t.Fatalf("driver_specific in fallback: %s", b.DriverSpecific)
	}
	// Everything still reads back, dirty data from the cache included.
	qemuIO(t, uri, "read -P 0xa1 0 1m", "read -P 0xb2 1m 256k", "read -P 0xb3 2m 256k",
		"read -P 0xc4 4m 64k", "read -P 0xc7 7m 64k", "write -P 0xd8 8m 64k", "read -P 0xd8 8m 64k")
	// Deleting the vbdev writes the dirty data back: the core alone is right.
	d.Call(t, "bdev_ocf_delete", map[string]any{"name": "Flaky"})
	d.Call(t, "nbd_start_disk", map[string]any{"bdev_name": "FlakyCore"})
	qemuIO(t, d.URI("FlakyCore"), "read -P 0xa1 0 1m", "read -P 0xb3 2m 256k", "read -P 0xc7 7m 64k", "read -P 0xd8 8m 64k")
	d.Stop(t)
}

// TestNestedOCFRemoval stacks an OCF vbdev on another (V2's core is V1)
// and removes the lower one by bdev_ocf_delete, by hot-removing its core,
// and by SIGTERM: the upper one must stop with it (waiting for its core),
// without hanging. (Each
// deadlocked once: the manager held its lock while unregistering V1, and
// V2's hot-remove callback waited for the same lock; callbacks are now
// queued actions.)
func TestNestedOCFRemoval(t *testing.T) {
	t.Parallel()
	d := StartDaemon(t, DaemonOpts{Bare: true})
	c, err := rpcclient.Dial(d.Sock, rpcclient.WithTimeout(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	call := func(method string, params any) {
		t.Helper()
		if _, err := c.Call(method, params); err != nil {
			t.Fatalf("%s %s: %v", method, mustJSON(params), err)
		}
	}
	build := func() {
		t.Helper()
		for _, n := range []string{"C1", "D1", "C2"} {
			call("bdev_malloc_create", mallocParams(n, 8, 512))
		}
		call("bdev_ocf_create", ocfParams("V1", "wt", "C1", "D1", 0))
		call("bdev_ocf_create", ocfParams("V2", "wt", "C2", "V1", 0))
	}
	gone := func(what string) {
		t.Helper()
		if _, err := c.Call("bdev_get_bdevs", map[string]any{"name": "V2"}); err == nil {
			t.Fatalf("%s: V2 is still registered", what)
		}
		// V2 waits for its core V1 on C2 (a hot-removed core), which it
		// keeps claimed; deleting C2 takes it.
		d.expectClaimed(t, "C2", true)
		for _, n := range []string{"C1", "D1", "C2"} {
			c.Call("bdev_malloc_delete", map[string]any{"name": n})
		}
		if vb := d.ocfBdevs(t, ""); len(vb) != 0 {
			t.Fatalf("%s: vbdevs left once their caches are deleted: %+v", what, vb)
		}
	}
	build()
	call("bdev_ocf_delete", map[string]any{"name": "V1"})
	gone("bdev_ocf_delete V1")
	build()
	call("bdev_malloc_delete", map[string]any{"name": "D1"})
	gone("hot-remove of D1")
	build()
	d.closeClient()
	c.Close()
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := d.Wait(t, 15*time.Second); code != 0 {
		t.Fatalf("exit status %d after SIGTERM", code)
	}
}
