package rpcclient

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"blockcache/internal/jsonrpc"
)

func TestCallRoundTrip(t *testing.T) {
	a := newFakeApp(t, jsonrpc.StateRuntime)
	a.register("bdev_ocf_get_bdevs", jsonrpc.StateRuntime, func(_ context.Context, p json.RawMessage) (any, error) {
		var q struct {
			Name string `json:"name"`
		}
		if err := jsonrpc.DecodeParams(p, &q, nil); err != nil {
			return nil, err
		}
		if q.Name == "missing" {
			return nil, jsonrpc.Errorf(jsonrpc.CodeInvalidParams, "No such device")
		}
		return []map[string]any{{"name": "C1", "started": true}}, nil
	})
	a.register("bdev_malloc_delete", jsonrpc.StateRuntime, func(context.Context, json.RawMessage) (any, error) {
		return nil, jsonrpc.ErrnoError(syscall.ENODEV)
	})
	c := a.dial(t)

	res, err := c.Call("bdev_ocf_get_bdevs", nil)
	if err != nil {
		t.Fatal(err)
	}
	if string(res) != `[{"name":"C1","started":true}]` {
		t.Fatalf("result %s", res)
	}

	_, err = c.Call("bdev_ocf_get_bdevs", map[string]any{"name": "missing"})
	var je *jsonrpc.Error
	if !errors.As(err, &je) || je.Code != -32602 || je.Message != "No such device" {
		t.Fatalf("error %v, want -32602 No such device", err)
	}
	want := `request:
{
  "name": "missing",
  "method": "bdev_ocf_get_bdevs",
  "req_id": 2
}
Got JSON-RPC error response
response:
{
  "code": -32602,
  "message": "No such device"
}`
	if err.Error() != want {
		t.Fatalf("error text\n%s\nwant\n%s", err, want)
	}

	_, err = c.Call("bdev_malloc_delete", map[string]any{"name": "Malloc9"})
	if !errors.As(err, &je) || je.Code != -19 || je.Message != "No such device" {
		t.Fatalf("errno error %v", err)
	}
	var re *ResponseError
	if !errors.As(err, &re) || re.Method != "bdev_malloc_delete" || re.ID != 3 {
		t.Fatalf("ResponseError %+v", re)
	}

	// Error data, when the server sends it, is kept and printed.
	_, err = c.Call("bdev_ocf_get_bdevs", map[string]any{"name": 5})
	if !errors.As(err, &je) || je.Data != `parameter "name": expected string, got number` {
		t.Fatalf("data: %v", err)
	}
	if !strings.Contains(err.Error(), `"data": "parameter \"name\": expected string, got number"`) {
		t.Fatalf("error text lacks data:\n%s", err)
	}

	// Unknown methods and wrong states are errors too; the client goes on.
	if _, err := c.Call("nope", nil); !errors.As(err, &je) || je.Code != jsonrpc.CodeMethodNotFound {
		t.Fatalf("unknown method: %v", err)
	}
	if _, err := c.Call("framework_start_init", nil); !errors.As(err, &je) || je.Code != jsonrpc.CodeInvalidState {
		t.Fatalf("wrong state: %v", err)
	}
	if _, err := c.Call("rpc_get_methods", nil); err != nil {
		t.Fatalf("client unusable after error replies: %v", err)
	}
}

func TestRequestBytesAndIDs(t *testing.T) {
	got := make(chan []byte, 3)
	path := rawServer(t, func(nc net.Conn) {
		dec := json.NewDecoder(nc)
		for i := 1; i <= 3; i++ {
			var raw json.RawMessage
			if err := dec.Decode(&raw); err != nil {
				return
			}
			got <- append([]byte(nil), raw...)
			// Reply split in pieces, without a trailing newline.
			r := fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"result":{"n":%d}}`, i, i)
			for j := 0; j < len(r); j += 7 {
				nc.Write([]byte(r[j:min(j+7, len(r))]))
				time.Sleep(time.Millisecond)
			}
		}
	})
	c, err := Dial(path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	params := []any{nil, map[string]any{"name": "x", "skip": nil, "flag": false}, json.RawMessage(`{"b":0,"a":1}`)}
	for i, p := range params {
		res, err := c.Call("m", p)
		if err != nil {
			t.Fatal(err)
		}
		if string(res) != fmt.Sprintf(`{"n":%d}`, i+1) {
			t.Fatalf("result %s", res)
		}
		want, _ := EncodeRequest(int64(i+1), "m", p)
		if b := <-got; !bytes.Equal(b, want) {
			t.Fatalf("request %d on the wire:\n%s\nwant\n%s", i+1, b, want)
		}
	}
}

func TestNoTrailingNewline(t *testing.T) {
	got := make(chan []byte, 1)
	path := rawServer(t, func(nc net.Conn) {
		buf := make([]byte, 4096)
		nc.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		var all []byte
		for {
			n, err := nc.Read(buf)
			all = append(all, buf[:n]...)
			if err != nil {
				break
			}
		}
		got <- all
		nc.Write([]byte(`{"jsonrpc":"2.0","id":1,"result":true}`))
	})
	c, err := Dial(path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Call("x", nil); err != nil {
		t.Fatal(err)
	}
	b := <-got
	if !bytes.HasSuffix(b, []byte("\n}")) || bytes.HasSuffix(b, []byte("\n")) {
		t.Fatalf("request bytes %q: want pretty-printed with no trailing newline", b)
	}
}

func TestReplyProblems(t *testing.T) {
	cases := []struct {
		name   string
		method string
		serve  func(nc net.Conn)
		check  func(t *testing.T, res json.RawMessage, err error)
	}{
		{
			name: "timeout", method: "x",
			serve: func(nc net.Conn) { io.Copy(io.Discard, nc) },
			check: func(t *testing.T, _ json.RawMessage, err error) {
				if err == nil || !strings.Contains(err.Error(), "timeout while waiting for response") {
					t.Fatalf("err %v", err)
				}
			},
		},
		{
			name: "closed with partial reply", method: "x",
			serve: func(nc net.Conn) {
				json.NewDecoder(nc).Decode(new(json.RawMessage))
				nc.Write([]byte(`{"jsonrpc":"2.0","id":1,"res`))
			},
			check: func(t *testing.T, _ json.RawMessage, err error) {
				if err == nil || !strings.Contains(err.Error(), "connection closed with partial response") {
					t.Fatalf("err %v", err)
				}
			},
		},
		{
			name: "spdk_kill_instance gets no reply", method: "spdk_kill_instance",
			serve: func(nc net.Conn) { json.NewDecoder(nc).Decode(new(json.RawMessage)) },
			check: func(t *testing.T, res json.RawMessage, err error) {
				if err != nil || string(res) != "{}" {
					t.Fatalf("got %s, %v; want {} as rpc.py", res, err)
				}
			},
		},
		{
			name: "wrong id", method: "x",
			serve: func(nc net.Conn) {
				json.NewDecoder(nc).Decode(new(json.RawMessage))
				nc.Write([]byte(`{"jsonrpc":"2.0","id":7,"result":1}`))
				io.Copy(io.Discard, nc) // until the client hangs up
			},
			check: func(t *testing.T, _ json.RawMessage, err error) {
				if err == nil || !strings.Contains(err.Error(), "does not answer request id 1") {
					t.Fatalf("err %v", err)
				}
			},
		},
		{
			name: "null id error", method: "x",
			serve: func(nc net.Conn) {
				json.NewDecoder(nc).Decode(new(json.RawMessage))
				nc.Write([]byte("  \n{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":-32700,\"message\":\"Parse error\"}}\n"))
				io.Copy(io.Discard, nc) // until the client hangs up
			},
			check: func(t *testing.T, _ json.RawMessage, err error) {
				var je *jsonrpc.Error
				if !errors.As(err, &je) || je.Code != -32700 {
					t.Fatalf("err %v", err)
				}
			},
		},
		{
			name: "null result", method: "x",
			serve: func(nc net.Conn) {
				json.NewDecoder(nc).Decode(new(json.RawMessage))
				nc.Write([]byte(`{"jsonrpc":"2.0","id":1,"result":null}`))
				io.Copy(io.Discard, nc) // until the client hangs up
			},
			check: func(t *testing.T, res json.RawMessage, err error) {
				if err != nil || string(res) != "null" {
					t.Fatalf("got %s, %v", res, err)
				}
			},
		},
		{
			name: "neither result nor error", method: "x",
			serve: func(nc net.Conn) {
				json.NewDecoder(nc).Decode(new(json.RawMessage))
				nc.Write([]byte(`{"jsonrpc":"2.0","id":1}`))
				io.Copy(io.Discard, nc) // until the client hangs up
			},
			check: func(t *testing.T, _ json.RawMessage, err error) {
				if err == nil || !strings.Contains(err.Error(), "neither result nor error") {
					t.Fatalf("err %v", err)
				}
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := rawServer(t, tc.serve)
			timeout := 5 * time.Second
			if tc.name == "timeout" {
				timeout = 200 * time.Millisecond
			}
			c, err := Dial(path, WithTimeout(timeout))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			res, err := c.Call(tc.method, nil)
			tc.check(t, res, err)
		})
	}
}

func TestBrokenClientRefusesCalls(t *testing.T) {
	path := rawServer(t, func(nc net.Conn) { io.Copy(io.Discard, nc) })
	c, err := Dial(path, WithTimeout(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Call("x", nil); err == nil {
		t.Fatal("no timeout")
	}
	if _, err := c.Call("y", nil); err == nil || !strings.Contains(err.Error(), "connection unusable") {
		t.Fatalf("second call after timeout: %v", err)
	}
}

func TestDialErrors(t *testing.T) {
	if _, err := Dial(socketPath(t)); err == nil || !strings.Contains(err.Error(), "is blockcache (or SPDK) running?") {
		t.Fatalf("dial to nothing: %v", err)
	}
	// Retries: the server appears after the first attempt fails.
	path := socketPath(t)
	go func() {
		time.Sleep(300 * time.Millisecond)
		a := jsonrpc.NewServer(jsonrpc.Options{})
		l, err := jsonrpc.Listen(path)
		if err == nil {
			a.Serve(l)
		}
	}()
	c, err := Dial(path, WithConnectRetries(20))
	if err != nil {
		t.Fatalf("dial with retries: %v", err)
	}
	c.Close()
}

func TestDialTCP(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := jsonrpc.NewServer(jsonrpc.Options{InitialState: jsonrpc.StateRuntime})
	s.Register("ping", ok("pong"))
	go s.Serve(l)
	defer s.Close()
	c, err := Dial(l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if res, err := c.Call("ping", nil); err != nil || string(res) != `"pong"` {
		t.Fatalf("got %s, %v", res, err)
	}
}

func TestConcurrentCallsShareOneClient(t *testing.T) {
	a := newFakeApp(t, jsonrpc.StateRuntime)
	a.register("echo", jsonrpc.StateRuntime, func(_ context.Context, p json.RawMessage) (any, error) { return p, nil })
	c := a.dial(t)
	errs := make(chan error, 8)
	for i := range 8 {
		go func() {
			for j := range 20 {
				want := fmt.Sprintf(`{"i":%d,"j":%d}`, i, j)
				res, err := c.Call("echo", json.RawMessage(want))
				if err == nil && string(res) != want {
					err = fmt.Errorf("got %s want %s", res, want)
				}
				if err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for range 8 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

func TestCallBatch(t *testing.T) {
	a := newFakeApp(t, jsonrpc.StateRuntime)
	a.register("echo", jsonrpc.StateRuntime, func(_ context.Context, p json.RawMessage) (any, error) { return p, nil })
	a.register("fail", jsonrpc.StateRuntime, func(context.Context, json.RawMessage) (any, error) {
		return nil, jsonrpc.ErrnoError(syscall.EEXIST)
	})
	c := a.dial(t)
	if _, err := c.Call("echo", nil); err != nil { // id 1
		t.Fatal(err)
	}
	res, err := c.CallBatch([]BatchCall{
		{Method: "echo", Params: map[string]int{"a": 1}},
		{Method: "echo", Params: map[string]int{"n": 1}, Notify: true},
		{Method: "fail"},
		{Method: "nope"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 3 {
		t.Fatalf("got %d results, want 3: %+v", len(res), res)
	}
	if res[0].ID != 2 || string(res[0].Result) != `{"a":1}` || res[0].Err != nil {
		t.Errorf("result 0: %+v", res[0])
	}
	if res[1].ID != 3 || res[1].Err == nil || res[1].Err.Code != -17 || res[1].Err.Message != "File exists" {
		t.Errorf("result 1: %+v", res[1])
	}
	if res[2].ID != 4 || res[2].Err == nil || res[2].Err.Code != jsonrpc.CodeMethodNotFound {
		t.Errorf("result 2: %+v", res[2])
	}
	calls := a.takeCalls()
	// The notification ran, in batch order, between echo and fail.
	if len(calls) != 4 || calls[2].Params != `{"n":1}` || calls[3].Method != "fail" {
		t.Errorf("server saw %+v", calls)
	}

	// Only notifications: nothing to wait for.
	if res, err := c.CallBatch([]BatchCall{{Method: "echo", Notify: true}}); err != nil || res != nil {
		t.Fatalf("notification-only batch: %v %v", res, err)
	}
	// The empty batch is rejected as a whole.
	_, err = c.CallBatch(nil)
	var je *jsonrpc.Error
	if !errors.As(err, &je) || je.Code != jsonrpc.CodeInvalidRequest {
		t.Fatalf("empty batch: %v", err)
	}
	// And the stream is still in step.
	if res, err := c.Call("echo", map[string]int{"z": 9}); err != nil || string(res) != `{"z":9}` {
		t.Fatalf("after batches: %s %v", res, err)
	}
}
