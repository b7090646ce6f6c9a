package rpcclient

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"blockcache/internal/jsonrpc"
)

// socketPath returns a short Unix socket path (sun_path is 108 bytes).
func socketPath(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "rpcc")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return filepath.Join(dir, "rpc.sock")
}

// call is one method call a fake server saw.
type call struct {
	Method string
	Params string // compact JSON, "" when absent
}

// fakeApp is a jsonrpc.Server with fake methods that records every call.
type fakeApp struct {
	*jsonrpc.Server
	path  string
	mu    sync.Mutex
	calls []call
}

func newFakeApp(t *testing.T, state jsonrpc.State) *fakeApp {
	t.Helper()
	a := &fakeApp{Server: jsonrpc.NewServer(jsonrpc.Options{InitialState: state}), path: socketPath(t)}
	a.Server.Register("rpc_get_methods", a.record("rpc_get_methods", a.GetMethodsHandler()),
		jsonrpc.AllowedIn(jsonrpc.StateStartup|jsonrpc.StateRuntime))
	a.Server.Register("framework_start_init", a.record("framework_start_init",
		func(context.Context, json.RawMessage) (any, error) {
			a.SetState(jsonrpc.StateRuntime)
			return true, nil
		}), jsonrpc.AllowedIn(jsonrpc.StateStartup), jsonrpc.ListedOnlyWhenAllowed())
	l, err := jsonrpc.Listen(a.path)
	if err != nil {
		t.Fatal(err)
	}
	go a.Serve(l)
	t.Cleanup(func() { a.Close() })
	return a
}

// register adds a recorded method.
func (a *fakeApp) register(name string, states jsonrpc.State, h jsonrpc.Handler) {
	a.Server.Register(name, a.record(name, h), jsonrpc.AllowedIn(states))
}

func (a *fakeApp) record(name string, h jsonrpc.Handler) jsonrpc.Handler {
	return func(ctx context.Context, p json.RawMessage) (any, error) {
		c := call{Method: name}
		if p != nil {
			var b []byte
			b, _ = json.Marshal(p) // compacts
			c.Params = string(b)
		}
		a.mu.Lock()
		a.calls = append(a.calls, c)
		a.mu.Unlock()
		return h(ctx, p)
	}
}

// takeCalls returns and forgets the calls seen so far.
func (a *fakeApp) takeCalls() []call {
	a.mu.Lock()
	defer a.mu.Unlock()
	c := a.calls
	a.calls = nil
	return c
}

func (a *fakeApp) dial(t *testing.T, opts ...Option) *Client {
	t.Helper()
	c, err := Dial(a.path, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// rawServer accepts one connection on a Unix socket and hands it to serve.
func rawServer(t *testing.T, serve func(net.Conn)) string {
	t.Helper()
	path := socketPath(t)
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		serve(c)
	}()
	return path
}

func ok(v any) jsonrpc.Handler {
	return func(context.Context, json.RawMessage) (any, error) { return v, nil }
}
