// Package rpcclient is a JSON-RPC client that talks to blockcache (or SPDK)
// exactly as SPDK's scripts/rpc.py does: the same request bytes, the same
// reading of replies, the same save_config and load_config algorithms. The
// `blockcache rpc` command and the tests use it as the stand-in for rpc.py.
//
// On the wire (python/spdk/rpc/client.py):
//
//   - a request is json.dumps({"jsonrpc": "2.0", "method": M, "id": N,
//     "params": P}, indent=2) with no trailing newline; "params" is left out
//     when P is empty, and ids count up from 1 per connection;
//   - the reply is read as a JSON stream (raw_decode on a buffer that grows
//     until one whole value has arrived), so any whitespace or none may
//     follow it;
//   - one call is outstanding at a time, with a timeout (60 s by default).
package rpcclient

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"
)

// DefaultTimeout is rpc.py's default -t.
const DefaultTimeout = 60 * time.Second

// connectRetryInterval is rpc.py's pause between connection attempts (-r).
const connectRetryInterval = 200 * time.Millisecond

// Option configures a Client.
type Option func(*Client)

// WithTimeout sets how long a call waits for its reply (rpc.py -t).
func WithTimeout(d time.Duration) Option { return func(c *Client) { c.timeout = d } }

// WithConnectRetries makes Dial retry n more times, 200 ms apart (rpc.py -r).
func WithConnectRetries(n int) Option { return func(c *Client) { c.retries = n } }

// WithLogger logs each request and reply at Debug level.
func WithLogger(l *slog.Logger) Option { return func(c *Client) { c.log = l } }

// Client is one connection to a JSON-RPC server. Its methods are safe for
// concurrent use; calls are made one at a time.
type Client struct {
	timeout time.Duration
	retries int
	log     *slog.Logger

	mu     sync.Mutex // serializes calls; guards the fields below
	conn   net.Conn
	dec    *json.Decoder // reads replies from conn
	lastID int64
	broken error // set when the stream can no longer be trusted
}

// Dial connects to addr: a Unix socket path, or "host:port" for TCP when
// host is an IP address or "localhost", as rpc.py's -s/-p.
func Dial(addr string, opts ...Option) (*Client, error) {
	c := newClient(opts)
	network := "unix"
	if host, _, err := net.SplitHostPort(addr); err == nil && (net.ParseIP(host) != nil || host == "localhost") {
		network = "tcp"
	}
	var conn net.Conn
	var err error
	for i := 0; ; i++ {
		conn, err = net.DialTimeout(network, addr, c.timeout)
		if err == nil || i >= c.retries {
			break
		}
		time.Sleep(connectRetryInterval)
	}
	if err != nil {
		return nil, fmt.Errorf("error while connecting to %s: is blockcache (or SPDK) running? %w", addr, err)
	}
	c.attach(conn)
	return c, nil
}

// NewClient returns a client speaking over an established connection.
func NewClient(conn net.Conn, opts ...Option) *Client {
	c := newClient(opts)
	c.attach(conn)
	return c
}

func newClient(opts []Option) *Client {
	c := &Client{timeout: DefaultTimeout}
	for _, o := range opts {
		o(c)
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	return c
}

func (c *Client) attach(conn net.Conn) {
	c.conn = conn
	c.dec = json.NewDecoder(conn)
	c.dec.UseNumber()
}

// Close closes the connection.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.broken == nil {
		c.broken = net.ErrClosed
	}
	return c.conn.Close()
}

// Call calls method and returns its result, as rpc.py's
// client.<method>(**params) does. params may be nil, a json.RawMessage, or
// anything encoding/json marshals to an object (a struct keeps its field
// order, a map is sorted by key); top-level members that are null are
// dropped and an empty object is not sent.
//
// An error reply is returned as a *ResponseError, which unwraps to the
// *jsonrpc.Error received. Other failures (timeout, connection closed,
// malformed reply) are plain errors, after which the client is unusable.
//
// When the connection closes without a reply to spdk_kill_instance, the
// call succeeds with the result {} as in rpc.py.
func (c *Client) Call(method string, params any) (json.RawMessage, error) {
	p, err := normalizeParams(params, true)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", method, err)
	}
	return c.call(method, p)
}

// CallRaw is client.call(method, params) in rpc.py: params, a JSON object,
// are sent as given (null members included), omitted only when empty. This
// is how load_config sends the entries of a config file.
func (c *Client) CallRaw(method string, params json.RawMessage) (json.RawMessage, error) {
	p, err := normalizeParams(params, false)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", method, err)
	}
	return c.call(method, p)
}

// reply is one decoded reply object.
type reply struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id"`
	Result  json.RawMessage `json:"result"`
	Error   json.RawMessage `json:"error"`
}

func (c *Client) call(method string, params json.RawMessage) (json.RawMessage, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.broken != nil {
		return nil, fmt.Errorf("%s: connection unusable: %w", method, c.broken)
	}
	c.lastID++
	id := c.lastID
	req, err := encodeRequest(id, method, params)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", method, err)
	}
	c.log.Debug("rpc request", "request", string(req))
	if err := c.send(req); err != nil {
		return nil, fmt.Errorf("%s: %w", method, err)
	}
	raw, err := c.recv()
	if err != nil {
		if method == "spdk_kill_instance" && errors.Is(err, errClosedByPeer) {
			return json.RawMessage("{}"), nil
		}
		return nil, fmt.Errorf("%s: %w", method, err)
	}
	c.log.Debug("rpc reply", "reply", string(raw))
	var r reply
	if err := json.Unmarshal(raw, &r); err != nil {
		return nil, c.fail(fmt.Errorf("%s: reply is not a JSON-RPC response object: %.200s", method, raw))
	}
	if !idMatches(r.ID, id) {
		return nil, c.fail(fmt.Errorf("%s: reply id %s does not answer request id %d", method, r.ID, id))
	}
	if r.Error != nil {
		return nil, newResponseError(method, id, params, r.Error)
	}
	if r.Result == nil {
		return nil, c.fail(fmt.Errorf("%s: reply has neither result nor error: %.200s", method, raw))
	}
	return r.Result, nil
}

// idMatches accepts the id sent, or null (which servers use for errors they
// cannot tie to a request, such as a parse error).
func idMatches(got json.RawMessage, want int64) bool {
	g := string(bytes.TrimSpace(got))
	return g == "null" || g == fmt.Sprint(want)
}

// errClosedByPeer marks a reply cut short by the server closing.
var errClosedByPeer = errors.New("connection closed")

// send writes one request (or batch), whole.
func (c *Client) send(b []byte) error {
	c.conn.SetWriteDeadline(time.Now().Add(c.timeout)) //nolint:errcheck // best effort
	if _, err := c.conn.Write(b); err != nil {
		return c.fail(err)
	}
	return nil
}

// recv reads the next complete JSON value from the connection, waiting at
// most the timeout.
func (c *Client) recv() (json.RawMessage, error) {
	c.conn.SetReadDeadline(time.Now().Add(c.timeout)) //nolint:errcheck // best effort
	var raw json.RawMessage
	err := c.dec.Decode(&raw)
	var ne net.Error
	switch {
	case err == nil:
		return raw, nil
	case errors.As(err, &ne) && ne.Timeout():
		return nil, c.fail(fmt.Errorf("timeout while waiting for response (%v)", c.timeout))
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		partial, _ := io.ReadAll(c.dec.Buffered())
		return nil, c.fail(fmt.Errorf("%w with partial response: %q", errClosedByPeer, partial))
	default:
		return nil, c.fail(fmt.Errorf("reading response: %w", err))
	}
}

// fail marks the client unusable and returns err.
func (c *Client) fail(err error) error {
	if c.broken == nil {
		c.broken = err
		c.conn.Close()
	}
	return err
}
