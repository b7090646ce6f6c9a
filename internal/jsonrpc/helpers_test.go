package jsonrpc

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// socketPath returns a socket path short enough for sun_path (108 bytes),
// which t.TempDir() under a long test name may not be.
func socketPath(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "jrpc")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return filepath.Join(dir, "rpc.sock")
}

// testServer is a server with a fixed set of fake methods, serving on a Unix
// socket.
type testServer struct {
	*Server
	path    string
	counted atomic.Int64 // calls of "count"
	served  chan error   // Serve's result
}

type sumParams struct {
	A int `json:"a" rpc:"required"`
	B int `json:"b"`
}

func newTestServer(t *testing.T, opts Options) *testServer {
	t.Helper()
	if opts.InitialState == 0 {
		opts.InitialState = StateRuntime
	}
	ts := &testServer{Server: NewServer(opts), path: socketPath(t), served: make(chan error, 1)}
	registerFakeMethods(ts.Server, &ts.counted)

	l, err := Listen(ts.path)
	if err != nil {
		t.Fatal(err)
	}
	go func() { ts.served <- ts.Serve(l) }()
	t.Cleanup(func() { ts.Close() })
	return ts
}

// rawConn is a client connection for writing exact bytes and reading
// replies one line at a time.
type rawConn struct {
	t *testing.T
	net.Conn
	r *bufio.Reader
}

func dialRaw(t *testing.T, path string) *rawConn {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawConn{t: t, Conn: c, r: bufio.NewReader(c)}
}

func (c *rawConn) send(s string) {
	c.t.Helper()
	if _, err := c.Write([]byte(s)); err != nil {
		c.t.Fatal(err)
	}
}

// line reads one reply line, checking it is one JSON value ending in "\n".
func (c *rawConn) line() []byte {
	c.t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, err := c.r.ReadBytes('\n')
	if err != nil {
		c.t.Fatalf("reading reply: %v (got %q)", err, b)
	}
	if !json.Valid(b) {
		c.t.Fatalf("reply is not one JSON value: %q", b)
	}
	return b[:len(b)-1]
}

// reply is a decoded reply object.
type reply struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id"`
	Result  json.RawMessage `json:"result"`
	Error   *Error          `json:"error"`
}

func (c *rawConn) reply() reply {
	c.t.Helper()
	var r reply
	b := c.line()
	if err := json.Unmarshal(b, &r); err != nil {
		c.t.Fatalf("reply %s: %v", b, err)
	}
	if r.JSONRPC != "2.0" {
		c.t.Fatalf("reply %s: jsonrpc is %q", b, r.JSONRPC)
	}
	if (r.Error == nil) == (r.Result == nil) {
		c.t.Fatalf("reply %s: want exactly one of result and error", b)
	}
	return r
}

// call sends a request with the given id and params and returns the reply.
func (c *rawConn) call(id int, method string, params string) reply {
	c.t.Helper()
	req := fmt.Sprintf(`{"jsonrpc":"2.0","method":%q,"id":%d`, method, id)
	if params != "" {
		req += `,"params":` + params
	}
	c.send(req + "}")
	r := c.reply()
	if string(r.ID) != fmt.Sprint(id) {
		c.t.Fatalf("reply id %s, want %d", r.ID, id)
	}
	return r
}

// noReply checks that nothing arrives within d.
func (c *rawConn) noReply(d time.Duration) {
	c.t.Helper()
	c.SetReadDeadline(time.Now().Add(d))
	b, err := c.r.ReadBytes('\n')
	var ne net.Error
	if len(b) > 0 || !errors.As(err, &ne) || !ne.Timeout() {
		c.t.Fatalf("unexpected reply %q (err %v)", b, err)
	}
	c.SetReadDeadline(time.Time{})
}

// closed checks that the server closes the connection.
func (c *rawConn) closed() {
	c.t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, err := c.r.ReadBytes('\n')
	if err == nil || len(b) > 0 {
		c.t.Fatalf("connection still open: read %q, %v", b, err)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		c.t.Fatal("connection not closed by the server")
	}
}

// wantError checks r is an error reply with the given code and message.
func wantError(t *testing.T, r reply, code int, msg string) {
	t.Helper()
	if r.Error == nil {
		t.Fatalf("got result %s, want error %d %q", r.Result, code, msg)
	}
	if r.Error.Code != code || r.Error.Message != msg {
		t.Fatalf("got error %d %q (data %q), want %d %q", r.Error.Code, r.Error.Message, r.Error.Data, code, msg)
	}
}

// registerFakeMethods registers the methods the tests call: each exercises
// one way a handler can answer.
func registerFakeMethods(s *Server, counted *atomic.Int64) {
	s.Register("echo", func(_ context.Context, p json.RawMessage) (any, error) {
		return p, nil
	})
	s.Register("sum", func(_ context.Context, p json.RawMessage) (any, error) {
		var sp sumParams
		if err := DecodeParams(p, &sp, nil); err != nil {
			return nil, err
		}
		return sp.A + sp.B, nil
	})
	s.Register("sum_generic", func(_ context.Context, p json.RawMessage) (any, error) {
		var sp sumParams
		if err := DecodeParams(p, &sp, &Error{Code: CodeInternalError, Message: MsgDecodeFailed}); err != nil {
			return nil, err
		}
		return sp.A + sp.B, nil
	})
	s.Register("fail_errno", func(_ context.Context, p json.RawMessage) (any, error) {
		var e struct {
			Errno int `json:"errno" rpc:"required"`
		}
		if err := DecodeParams(p, &e, nil); err != nil {
			return nil, err
		}
		return nil, ErrnoError(syscall.Errno(e.Errno))
	})
	s.Register("fail_plain", func(context.Context, json.RawMessage) (any, error) {
		return nil, errors.New("boom")
	})
	s.Register("fail_wrapped", func(context.Context, json.RawMessage) (any, error) {
		return nil, fmt.Errorf("lookup: %w", Errorf(CodeInvalidParams, "No such device"))
	})
	s.Register("panic", func(context.Context, json.RawMessage) (any, error) {
		panic(errors.New("handler bug"))
	})
	s.Register("unencodable", func(context.Context, json.RawMessage) (any, error) {
		return make(chan int), nil
	})
	s.Register("nil_result", func(context.Context, json.RawMessage) (any, error) {
		return nil, nil
	})
	s.Register("text", func(context.Context, json.RawMessage) (any, error) {
		return "é<>&\u2028😀\x7f", nil
	})
	s.Register("count", func(context.Context, json.RawMessage) (any, error) {
		return counted.Add(1), nil
	}, AllowedIn(StateStartup|StateRuntime))
	s.Register("startup_only", func(context.Context, json.RawMessage) (any, error) {
		return true, nil
	}, AllowedIn(StateStartup))
	s.Register("rpc_get_methods", s.GetMethodsHandler(), AllowedIn(StateStartup|StateRuntime))
	s.RegisterAlias("construct_echo", "echo")
}
