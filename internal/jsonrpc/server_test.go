package jsonrpc

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// pretty formats a request as rpc.py does: json.dumps(req, indent=2), no
// trailing newline.
func pretty(t *testing.T, compact string) string {
	t.Helper()
	var b bytes.Buffer
	if err := json.Indent(&b, []byte(compact), "", "  "); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func TestStreamWithoutSeparatorsInOneWrite(t *testing.T) {
	ts := newTestServer(t, Options{})
	c := dialRaw(t, ts.path)
	var all string
	for i := 1; i <= 3; i++ {
		all += pretty(t, fmt.Sprintf(`{"jsonrpc":"2.0","method":"sum","id":%d,"params":{"a":%d,"b":10}}`, i, i))
	}
	if strings.Contains(all, "}{") == false {
		t.Fatal("requests should abut with no separator")
	}
	c.send(all)
	for i := 1; i <= 3; i++ {
		r := c.reply()
		if string(r.ID) != fmt.Sprint(i) || string(r.Result) != fmt.Sprint(i+10) {
			t.Fatalf("reply %d: id %s result %s", i, r.ID, r.Result)
		}
	}
}

func TestStreamByteByByte(t *testing.T) {
	ts := newTestServer(t, Options{})
	c := dialRaw(t, ts.path)
	req := pretty(t, `{"jsonrpc":"2.0","method":"sum","id":7,"params":{"a":1,"b":2}}`) +
		pretty(t, `{"jsonrpc":"2.0","method":"echo","id":8,"params":[1,"x"]}`)
	first := strings.Index(req, "}{") + 1
	for i := 0; i < first-1; i++ {
		c.send(req[i : i+1])
	}
	// The request is not complete until its closing brace: no reply yet.
	c.noReply(50 * time.Millisecond)
	c.send(req[first-1 : first])
	if r := c.reply(); string(r.ID) != "7" || string(r.Result) != "3" {
		t.Fatalf("first reply: %+v", r)
	}
	for i := first; i < len(req); i++ {
		c.send(req[i : i+1])
	}
	if r := c.reply(); string(r.ID) != "8" || string(r.Result) != `[1,"x"]` {
		t.Fatalf("second reply: id %s result %s", r.ID, r.Result)
	}
}

func TestReplyFormat(t *testing.T) {
	ts := newTestServer(t, Options{})
	c := dialRaw(t, ts.path)
	c.send(`{"jsonrpc":"2.0","method":"text","id":1}`)
	// Compact, SPDK's member order, non-ASCII and DEL as upper-case \u
	// escapes, no HTML escaping, one trailing newline.
	want := `{"jsonrpc":"2.0","id":1,"result":"\u00E9<>&\u2028\uD83D\uDE00\u007F"}`
	if got := string(c.line()); got != want {
		t.Fatalf("reply\n got %s\nwant %s", got, want)
	}
	c.send(`{"jsonrpc":"2.0","method":"fail_errno","id":2,"params":{"errno":19}}`)
	want = `{"jsonrpc":"2.0","id":2,"error":{"code":-19,"message":"No such device"}}`
	if got := string(c.line()); got != want {
		t.Fatalf("reply\n got %s\nwant %s", got, want)
	}
	c.send(`{"jsonrpc":"2.0","method":"nil_result","id":3}`)
	if got, want := string(c.line()), `{"jsonrpc":"2.0","id":3,"result":null}`; got != want {
		t.Fatalf("reply\n got %s\nwant %s", got, want)
	}
}

func TestIDsEchoed(t *testing.T) {
	ts := newTestServer(t, Options{})
	c := dialRaw(t, ts.path)
	for _, id := range []string{`"abc"`, `"x\"y"`, `0`, `-5`, `1.50`, `12345678901234567890123`, `null`} {
		c.send(`{"jsonrpc":"2.0","method":"sum","params":{"a":1},"id":` + id + `}`)
		r := c.reply()
		if string(r.ID) != id {
			t.Errorf("id %s echoed as %s", id, r.ID)
		}
		if string(r.Result) != "1" {
			t.Errorf("id %s: result %s", id, r.Result)
		}
	}
}

func TestNotifications(t *testing.T) {
	ts := newTestServer(t, Options{})
	c := dialRaw(t, ts.path)
	c.send(`{"jsonrpc":"2.0","method":"count"}`)
	c.send(`{"jsonrpc":"2.0","method":"no_such_method"}`)
	c.send(`{"jsonrpc":"2.0","method":"fail_plain","params":{}}`)
	c.send(`{"jsonrpc":"2.0","method":"count"}`)
	// The next reply must be this request's: notifications got none.
	if r := c.call(9, "count", ""); string(r.Result) != "3" {
		t.Fatalf("count after two notifications = %s, want 3", r.Result)
	}
}

func TestBatch(t *testing.T) {
	ts := newTestServer(t, Options{})
	c := dialRaw(t, ts.path)

	c.send(`[{"jsonrpc":"2.0","method":"sum","id":1,"params":{"a":1}},
		{"jsonrpc":"2.0","method":"count"},
		1,
		{"jsonrpc":"2.0","method":"nope","id":"b"},
		{"jsonrpc":"2.0","method":"sum","id":2,"params":{"a":2,"b":2}}]`)
	var replies []reply
	if err := json.Unmarshal(c.line(), &replies); err != nil {
		t.Fatal(err)
	}
	if len(replies) != 4 {
		t.Fatalf("got %d replies, want 4: %+v", len(replies), replies)
	}
	if string(replies[0].ID) != "1" || string(replies[0].Result) != "1" {
		t.Errorf("reply 0: %+v", replies[0])
	}
	wantError(t, replies[1], CodeInvalidRequest, MsgInvalidRequest)
	if string(replies[1].ID) != "null" {
		t.Errorf("invalid element reply id %s, want null", replies[1].ID)
	}
	wantError(t, replies[2], CodeMethodNotFound, MsgMethodNotFound)
	if string(replies[3].ID) != "2" || string(replies[3].Result) != "4" {
		t.Errorf("reply 3: %+v", replies[3])
	}
	if ts.counted.Load() != 1 {
		t.Errorf("notification in batch ran %d times", ts.counted.Load())
	}

	// An empty batch is one invalid-request error, not an array.
	c.send(`[]`)
	r := c.reply()
	wantError(t, r, CodeInvalidRequest, MsgInvalidRequest)

	// A batch of notifications gets no reply at all.
	c.send(`[{"jsonrpc":"2.0","method":"count"},{"jsonrpc":"2.0","method":"count"}]`)
	if r := c.call(5, "count", ""); string(r.Result) != "4" {
		t.Fatalf("count = %s, want 4", r.Result)
	}
}

func TestErrorCodes(t *testing.T) {
	ts := newTestServer(t, Options{})
	c := dialRaw(t, ts.path)
	cases := []struct {
		name, req string
		code      int
		msg       string
		id        string
	}{
		{"method not found", `{"jsonrpc":"2.0","method":"nope","id":1}`, CodeMethodNotFound, MsgMethodNotFound, "1"},
		{"wrong version", `{"jsonrpc":"1.0","method":"echo","id":1}`, CodeInvalidRequest, MsgInvalidRequest, "1"},
		{"version not string", `{"jsonrpc":2,"method":"echo","id":1}`, CodeInvalidRequest, MsgInvalidRequest, "1"},
		{"method not string", `{"jsonrpc":"2.0","method":5,"id":1}`, CodeInvalidRequest, MsgInvalidRequest, "1"},
		{"method missing", `{"jsonrpc":"2.0","id":1}`, CodeInvalidRequest, MsgInvalidRequest, "1"},
		{"params scalar", `{"jsonrpc":"2.0","method":"echo","params":"x","id":1}`, CodeInvalidRequest, MsgInvalidRequest, "1"},
		{"unknown member", `{"jsonrpc":"2.0","method":"echo","id":1,"extra":0}`, CodeInvalidRequest, MsgInvalidRequest, "1"},
		{"duplicate member", `{"jsonrpc":"2.0","method":"echo","method":"echo","id":1}`, CodeInvalidRequest, MsgInvalidRequest, "1"},
		{"duplicate id", `{"jsonrpc":"2.0","method":"echo","id":1,"id":2}`, CodeInvalidRequest, MsgInvalidRequest, "null"},
		{"id object", `{"jsonrpc":"2.0","method":"echo","id":{}}`, CodeInvalidRequest, MsgInvalidRequest, "null"},
		{"invalid notification", `{"jsonrpc":"2.0","method":true}`, CodeInvalidRequest, MsgInvalidRequest, "null"},
		{"top-level number", `42 `, CodeInvalidRequest, MsgInvalidRequest, "null"},
		// A bare scalar ends only at the next byte, as in any JSON stream.
		{"top-level string", `"hi" `, CodeInvalidRequest, MsgInvalidRequest, "null"},
		{"missing param", `{"jsonrpc":"2.0","method":"sum","id":1,"params":{"b":1}}`, CodeInvalidParams, MsgInvalidParams, "1"},
		{"unknown param", `{"jsonrpc":"2.0","method":"sum","id":1,"params":{"a":1,"c":1}}`, CodeInvalidParams, MsgInvalidParams, "1"},
		{"mistyped param", `{"jsonrpc":"2.0","method":"sum","id":1,"params":{"a":"1"}}`, CodeInvalidParams, MsgInvalidParams, "1"},
		{"positional params", `{"jsonrpc":"2.0","method":"sum","id":1,"params":[1]}`, CodeInvalidParams, MsgInvalidParams, "1"},
		{"generic decode failure", `{"jsonrpc":"2.0","method":"sum_generic","id":1,"params":{"a":true}}`, CodeInternalError, MsgDecodeFailed, "1"},
		{"plain error", `{"jsonrpc":"2.0","method":"fail_plain","id":1}`, CodeInternalError, "boom", "1"},
		{"wrapped rpc error", `{"jsonrpc":"2.0","method":"fail_wrapped","id":1}`, CodeInvalidParams, "No such device", "1"},
		{"panic", `{"jsonrpc":"2.0","method":"panic","id":1}`, CodeInternalError, MsgInternalError, "1"},
		{"unencodable result", `{"jsonrpc":"2.0","method":"unencodable","id":1}`, CodeInternalError, MsgInternalError, "1"},
		{"invalid state", `{"jsonrpc":"2.0","method":"startup_only","id":1}`, CodeInvalidState, MsgNeedsStartup, "1"},
		{"ENODEV", `{"jsonrpc":"2.0","method":"fail_errno","id":1,"params":{"errno":19}}`, -19, "No such device", "1"},
		{"EEXIST", `{"jsonrpc":"2.0","method":"fail_errno","id":1,"params":{"errno":17}}`, -17, "File exists", "1"},
		{"EBUSY", `{"jsonrpc":"2.0","method":"fail_errno","id":1,"params":{"errno":16}}`, -16, "Device or resource busy", "1"},
		{"EINVAL", `{"jsonrpc":"2.0","method":"fail_errno","id":1,"params":{"errno":22}}`, -22, "Invalid argument", "1"},
		{"ENOMEM", `{"jsonrpc":"2.0","method":"fail_errno","id":1,"params":{"errno":12}}`, -12, "Cannot allocate memory", "1"},
		{"EPERM", `{"jsonrpc":"2.0","method":"fail_errno","id":1,"params":{"errno":1}}`, -1, "Operation not permitted", "1"},
		{"ENOENT", `{"jsonrpc":"2.0","method":"fail_errno","id":1,"params":{"errno":2}}`, -2, "No such file or directory", "1"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c.send(tc.req)
			r := c.reply()
			wantError(t, r, tc.code, tc.msg)
			if string(r.ID) != tc.id {
				t.Errorf("id %s, want %s", r.ID, tc.id)
			}
		})
	}
	// The connection survived all of that, including the panic.
	if r := c.call(99, "sum", `{"a":5}`); string(r.Result) != "5" {
		t.Fatalf("after errors: %+v", r)
	}
}

func TestDecodeErrorNamesTheField(t *testing.T) {
	ts := newTestServer(t, Options{})
	c := dialRaw(t, ts.path)
	for params, data := range map[string]string{
		`{"b":1}`:         `parameter "a": missing required parameter`,
		`{"a":1,"c":2}`:   `parameter "c": unknown parameter`,
		`{"a":"x"}`:       `parameter "a": expected integer, got string`,
		`{"a":1,"a":2}`:   `parameter "a": given twice`,
		`[1]`:             `params: expected object, got array`,
		`{"a":1,"b":1.5}`: `parameter "b": 1.5 is not an int64`,
	} {
		r := c.call(1, "sum", params)
		wantError(t, r, CodeInvalidParams, MsgInvalidParams)
		if r.Error.Data != data {
			t.Errorf("params %s: data %q, want %q", params, r.Error.Data, data)
		}
	}
}

func TestOmitErrorData(t *testing.T) {
	ts := newTestServer(t, Options{OmitErrorData: true})
	c := dialRaw(t, ts.path)
	c.send(`{"jsonrpc":"2.0","method":"sum","id":1,"params":{}}`)
	if got, want := string(c.line()), `{"jsonrpc":"2.0","id":1,"error":{"code":-32602,"message":"Invalid parameters"}}`; got != want {
		t.Fatalf("got %s, want %s", got, want)
	}
}

func TestJSONRPCMemberOptional(t *testing.T) {
	// SPDK accepts requests without "jsonrpc"; so do we.
	ts := newTestServer(t, Options{})
	c := dialRaw(t, ts.path)
	c.send(`{"method":"sum","id":1,"params":{"a":3}}`)
	if r := c.reply(); string(r.Result) != "3" {
		t.Fatalf("got %+v", r)
	}
}

func TestNullParamsAreAbsent(t *testing.T) {
	ts := newTestServer(t, Options{})
	c := dialRaw(t, ts.path)
	if r := c.call(1, "echo", "null"); string(r.Result) != "null" {
		t.Fatalf("echo with null params returned %s, want null (nil params)", r.Result)
	}
	if r := c.call(2, "echo", "{}"); string(r.Result) != "{}" {
		t.Fatalf("echo with {} returned %s", r.Result)
	}
}

func TestParseErrorClosesConnection(t *testing.T) {
	for name, bad := range map[string]string{
		"garbage":       `{"jsonrpc":"2.0","method":"sum","id":1,"params":{"a":1}}xyz`,
		"unquoted key":  `{jsonrpc:"2.0"}`,
		"trailing junk": `{"jsonrpc":"2.0","method":"sum","id":1,"params":{"a":1}} }`,
	} {
		t.Run(name, func(t *testing.T) {
			ts := newTestServer(t, Options{})
			c := dialRaw(t, ts.path)
			c.send(bad)
			r := c.reply()
			if r.Error == nil {
				// The valid request before the garbage is answered first.
				if string(r.Result) != "1" {
					t.Fatalf("unexpected %+v", r)
				}
				r = c.reply()
			}
			wantError(t, r, CodeParseError, MsgParseError)
			if string(r.ID) != "null" {
				t.Fatalf("parse error id %s", r.ID)
			}
			c.closed()
		})
	}
}

func TestRequestSizeCap(t *testing.T) {
	ts := newTestServer(t, Options{MaxRequestBytes: 1024})
	c := dialRaw(t, ts.path)
	pad := strings.Repeat(" ", 600)
	// Each request is under the cap; together they are over it.
	for i := 1; i <= 3; i++ {
		if r := c.call(i, "echo", `{"pad":"`+pad+`"}`); r.Error != nil {
			t.Fatalf("request %d: %+v", i, r.Error)
		}
	}
	c.send(`{"jsonrpc":"2.0","method":"echo","id":4,"params":{"pad":"` + strings.Repeat("x", 2000) + `"}}`)
	r := c.reply()
	wantError(t, r, CodeParseError, MsgParseError)
	if !strings.Contains(r.Error.Data, "exceeds 1024 bytes") {
		t.Errorf("data %q", r.Error.Data)
	}
	c.closed()
}

func TestStateGating(t *testing.T) {
	ts := newTestServer(t, Options{InitialState: StateStartup})
	c := dialRaw(t, ts.path)
	if ts.State() != StateStartup {
		t.Fatalf("state %v", ts.State())
	}
	wantError(t, c.call(1, "sum", `{"a":1}`), CodeInvalidState, MsgNeedsRuntime)
	if r := c.call(2, "startup_only", ""); string(r.Result) != "true" {
		t.Fatalf("startup_only in startup: %+v", r)
	}
	// Aliases share the state mask of their method.
	wantError(t, c.call(3, "construct_echo", ""), CodeInvalidState, MsgNeedsRuntime)

	var current []string
	if err := json.Unmarshal(c.call(4, "rpc_get_methods", `{"current":true}`).Result, &current); err != nil {
		t.Fatal(err)
	}
	if want := []string{"count", "rpc_get_methods", "startup_only"}; fmt.Sprint(current) != fmt.Sprint(want) {
		t.Fatalf("current methods in startup = %v, want %v", current, want)
	}

	ts.SetState(StateRuntime)
	wantError(t, c.call(5, "startup_only", ""), CodeInvalidState, MsgNeedsStartup)
	if r := c.call(6, "construct_echo", `{"x":1}`); string(r.Result) != `{"x":1}` {
		t.Fatalf("alias: %+v", r)
	}
	got := ts.Methods(true)
	for _, m := range got {
		if m == "startup_only" || m == "construct_echo" {
			t.Fatalf("Methods(true) in runtime lists %s: %v", m, got)
		}
	}
	all := ts.Methods(false)
	if len(all) != len(got)+1 {
		t.Fatalf("Methods(false) = %v, Methods(true) = %v", all, got)
	}

	var withAliases []string
	if err := json.Unmarshal(c.call(7, "rpc_get_methods", `{"current":false,"include_aliases":true}`).Result, &withAliases); err != nil {
		t.Fatal(err)
	}
	if len(withAliases) != len(all)+1 || withAliases[len(withAliases)-1] != "construct_echo" {
		t.Fatalf("with aliases: %v", withAliases)
	}
	wantError(t, c.call(8, "rpc_get_methods", `{"current":1}`), CodeInvalidParams, MsgInvalidParams)
}

func TestRegisterPanics(t *testing.T) {
	s := NewServer(Options{})
	s.Register("a", func(context.Context, json.RawMessage) (any, error) { return nil, nil })
	for name, f := range map[string]func(){
		"duplicate":       func() { s.Register("a", func(context.Context, json.RawMessage) (any, error) { return nil, nil }) },
		"nil handler":     func() { s.Register("b", nil) },
		"alias of absent": func() { s.RegisterAlias("x", "missing") },
		"alias taken":     func() { s.RegisterAlias("a", "a") },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: no panic", name)
				}
			}()
			f()
		}()
	}
}

func TestConcurrentClients(t *testing.T) {
	const clients = 8
	ts := newTestServer(t, Options{})
	// "rendezvous" returns only once every client is inside it, which
	// proves that connections are served concurrently.
	var arrived sync.WaitGroup
	arrived.Add(clients)
	all := make(chan struct{})
	go func() { arrived.Wait(); close(all) }()
	ts.Register("rendezvous", func(ctx context.Context, _ json.RawMessage) (any, error) {
		arrived.Done()
		select {
		case <-all:
			return true, nil
		case <-time.After(5 * time.Second):
			return nil, errors.New("not all clients arrived")
		}
	})

	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			nc, err := net.Dial("unix", ts.path)
			if err != nil {
				errs <- err
				return
			}
			defer nc.Close()
			dec := json.NewDecoder(nc)
			// Pipeline: rendezvous, then 20 sums, all in one write; replies
			// must come back in order.
			var req strings.Builder
			fmt.Fprintf(&req, `{"jsonrpc":"2.0","method":"rendezvous","id":0}`)
			for j := 1; j <= 20; j++ {
				fmt.Fprintf(&req, `{"jsonrpc":"2.0","method":"sum","id":%d,"params":{"a":%d,"b":%d}}`, j, i, j)
			}
			if _, err := nc.Write([]byte(req.String())); err != nil {
				errs <- err
				return
			}
			for j := 0; j <= 20; j++ {
				var r reply
				if err := dec.Decode(&r); err != nil {
					errs <- err
					return
				}
				if r.Error != nil || string(r.ID) != fmt.Sprint(j) {
					errs <- fmt.Errorf("client %d reply %d: %+v", i, j, r)
					return
				}
				if j > 0 && string(r.Result) != fmt.Sprint(i+j) {
					errs <- fmt.Errorf("client %d: sum %d = %s", i, j, r.Result)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestShutdownDrainsRunningRequest(t *testing.T) {
	ts := newTestServer(t, Options{})
	entered := make(chan struct{})
	release := make(chan struct{})
	ts.Register("slow", func(ctx context.Context, _ json.RawMessage) (any, error) {
		close(entered)
		<-release
		return "done", ctx.Err()
	})
	busy := dialRaw(t, ts.path)
	idle := dialRaw(t, ts.path)
	idle.call(1, "sum", `{"a":1}`)
	busy.send(`{"jsonrpc":"2.0","method":"slow","id":1}`)
	<-entered

	shut := make(chan error, 1)
	go func() { shut <- ts.Shutdown(context.Background()) }()
	idle.closed() // idle connections go at once
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned %v while a request was running", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	if r := busy.reply(); string(r.Result) != `"done"` {
		t.Fatalf("drained request: %+v", r)
	}
	busy.closed()
	if err := <-shut; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := <-ts.served; !errors.Is(err, ErrServerClosed) {
		t.Fatalf("Serve returned %v", err)
	}
	if _, err := net.Dial("unix", ts.path); err == nil {
		t.Fatal("socket still accepting after Shutdown")
	}
}

func TestShutdownTimeoutCloses(t *testing.T) {
	ts := newTestServer(t, Options{})
	entered := make(chan struct{})
	ts.Register("stuck", func(ctx context.Context, _ json.RawMessage) (any, error) {
		close(entered)
		<-ctx.Done() // only Close cancels this
		return nil, ctx.Err()
	})
	c := dialRaw(t, ts.path)
	c.send(`{"jsonrpc":"2.0","method":"stuck","id":1}`)
	<-entered
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := ts.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown = %v, want deadline exceeded", err)
	}
	c.closed()
}

func TestServeAfterClose(t *testing.T) {
	s := NewServer(Options{})
	s.Close()
	l, err := net.Listen("unix", socketPath(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Serve(l); !errors.Is(err, ErrServerClosed) {
		t.Fatalf("Serve after Close = %v", err)
	}
}

func TestListedOnlyWhenAllowed(t *testing.T) {
	s := NewServer(Options{})
	nop := func(context.Context, json.RawMessage) (any, error) { return true, nil }
	s.Register("framework_start_init", nop, AllowedIn(StateStartup), ListedOnlyWhenAllowed())
	s.Register("bdev_get_bdevs", nop)
	s.RegisterAlias("start_subsystem_init", "framework_start_init")
	if got := fmt.Sprint(s.Methods(false), s.Aliases(false)); got != "[bdev_get_bdevs framework_start_init] [start_subsystem_init]" {
		t.Fatalf("startup: %s", got)
	}
	s.SetState(StateRuntime)
	if got := fmt.Sprint(s.Methods(false), s.Aliases(false)); got != "[bdev_get_bdevs] []" {
		t.Fatalf("runtime: %s", got)
	}
}

// pyClient reads replies the way rpc.py does: it sends json.dumps(req,
// indent=2) with no newline, then grows a buffer until
// JSONDecoder().raw_decode finds one whole value, keeping the rest.
const pyClient = `
import json, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
buf = ""
def call(i, method, params):
    global buf
    req = {"jsonrpc": "2.0", "method": method, "id": i}
    if params:
        req["params"] = params
    s.sendall(json.dumps(req, indent=2).encode())
    while True:
        try:
            obj, idx = json.JSONDecoder().raw_decode(buf.lstrip())
            buf = buf.lstrip()[idx:]
            return obj
        except ValueError:
            buf += s.recv(4096).decode()
print(json.dumps(call(1, "sum", {"a": 1, "b": 2})))
print(json.dumps(call(2, "text", None), ensure_ascii=False))
print(json.dumps(call(3, "sum", {"a": "x"})))
`

func TestPythonRawDecodeClient(t *testing.T) {
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Fatal("python3 not installed: run `make deps` (python3-libnbd brings it)")
	}
	ts := newTestServer(t, Options{})
	out, err := exec.Command(py, "-c", pyClient, ts.path).CombinedOutput()
	if err != nil {
		t.Fatalf("python client: %v\n%s", err, out)
	}
	want := `{"jsonrpc": "2.0", "id": 1, "result": 3}
{"jsonrpc": "2.0", "id": 2, "result": "é<>&` + "\u2028😀\x7f" + `"}
{"jsonrpc": "2.0", "id": 3, "error": {"code": -32602, "message": "Invalid parameters", "data": "parameter \"a\": expected integer, got string"}}
`
	if string(out) != want {
		t.Fatalf("python saw\n%s\nwant\n%s", out, want)
	}
}
