package jsonrpc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// ErrServerClosed is returned by Serve after Shutdown or Close.
var ErrServerClosed = errors.New("jsonrpc: server closed")

// Options configure a Server. The zero value is usable.
type Options struct {
	// Logger receives request traces (Debug) and failures. nil discards.
	Logger *slog.Logger
	// MaxRequestBytes caps one top-level JSON value; a larger one is
	// answered with a parse error and the connection is closed. 0 means
	// DefaultMaxRequestBytes.
	MaxRequestBytes int64
	// MaxLargeRequests bounds how many requests of more than 64 KiB are
	// read and handled at once across all connections; others wait. 0
	// means DefaultMaxLargeRequests.
	MaxLargeRequests int
	// LargeRequestTimeout is how long a request of more than 64 KiB may
	// take to arrive once its turn came; a slower one is answered with a
	// parse error and its connection closed. 0 means
	// DefaultLargeRequestTimeout.
	LargeRequestTimeout time.Duration
	// OmitErrorData drops the "data" member from error replies, making them
	// byte-identical to SPDK's.
	OmitErrorData bool
	// InitialState is the state before any SetState; 0 means StateStartup,
	// where SPDK's RPC server begins.
	InitialState State
}

// Server is a JSON-RPC 2.0 server speaking SPDK's dialect over stream
// sockets: requests are a stream of JSON values with or without separators,
// each reply is one compact JSON value followed by "\n".
//
// Connections are served concurrently, each on its own goroutine; within a
// connection requests run one at a time, in order. Register methods before
// serving; registering later is safe but racy from a client's view.
type Server struct {
	opts Options
	log  *slog.Logger
	reg  registry

	state atomic.Uint32 // a State

	// baseCtx is the parent of every handler's context; cancel fires on
	// Close.
	baseCtx context.Context
	cancel  context.CancelFunc

	// closing is set by Shutdown and Close; connections finish the request
	// in hand and exit. done is closed at the same time, for those waiting
	// on largeSlots.
	closing atomic.Bool
	done    chan struct{}

	// largeSlots holds a token per request of more than smallRequestBytes
	// being read or handled (see requestReader).
	largeSlots chan struct{}

	mu struct {
		sync.Mutex
		listeners map[net.Listener]struct{}
		conns     map[net.Conn]struct{}
	}
	// conns counts connection goroutines, for Shutdown to wait on.
	conns sync.WaitGroup
}

// NewServer returns a server with no methods registered.
func NewServer(opts Options) *Server {
	if opts.MaxRequestBytes <= 0 {
		opts.MaxRequestBytes = DefaultMaxRequestBytes
	}
	if opts.MaxLargeRequests <= 0 {
		opts.MaxLargeRequests = DefaultMaxLargeRequests
	}
	if opts.LargeRequestTimeout <= 0 {
		opts.LargeRequestTimeout = DefaultLargeRequestTimeout
	}
	if opts.InitialState == 0 {
		opts.InitialState = StateStartup
	}
	s := &Server{opts: opts, log: opts.Logger}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.reg.methods = map[string]*method{}
	s.state.Store(uint32(opts.InitialState))
	s.baseCtx, s.cancel = context.WithCancel(context.Background())
	s.done = make(chan struct{})
	s.largeSlots = make(chan struct{}, opts.MaxLargeRequests)
	s.mu.listeners = map[net.Listener]struct{}{}
	s.mu.conns = map[net.Conn]struct{}{}
	return s
}

// ListenAndServe listens on the Unix socket path with Listen and serves it.
func (s *Server) ListenAndServe(path string) error {
	l, err := Listen(path)
	if err != nil {
		return err
	}
	return s.Serve(l)
}

// Serve accepts connections on l until Shutdown or Close, and then returns
// ErrServerClosed. It closes l when it returns.
func (s *Server) Serve(l net.Listener) error {
	if !s.track(l, true) {
		l.Close()
		return ErrServerClosed
	}
	defer func() {
		if s.track(l, false) {
			l.Close()
		}
	}()
	var backoff time.Duration
	for {
		nc, err := l.Accept()
		if err != nil {
			if s.closing.Load() {
				return ErrServerClosed
			}
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			// EMFILE, ECONNABORTED and the like pass; retry as net/http does.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.log.Warn("jsonrpc accept failed; retrying", "err", err, "in", backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		if !s.trackConn(nc, true) {
			nc.Close()
			return ErrServerClosed
		}
		go s.serveConn(nc)
	}
}

// track adds or removes a listener; adding fails once the server is closing,
// removing reports whether l was still tracked (and so still to be closed).
func (s *Server) track(l net.Listener, add bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if add {
		if s.closing.Load() {
			return false
		}
		s.mu.listeners[l] = struct{}{}
		return true
	}
	_, ok := s.mu.listeners[l]
	delete(s.mu.listeners, l)
	return ok
}

func (s *Server) trackConn(nc net.Conn, add bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if add {
		if s.closing.Load() {
			return false
		}
		s.mu.conns[nc] = struct{}{}
		s.conns.Add(1)
		return true
	}
	delete(s.mu.conns, nc)
	return true
}

// serveConn runs one connection until the peer leaves, a parse error, or
// shutdown.
func (s *Server) serveConn(nc net.Conn) {
	defer s.conns.Done()
	defer s.trackConn(nc, false)
	defer nc.Close()
	err := s.serveStream(s.baseCtx, nc, nc)
	if err != nil && !s.closing.Load() {
		s.log.Debug("jsonrpc connection closed", "err", err)
	}
	if errors.Is(err, errTooLarge) {
		discardUnread(nc)
	}
}

// discardUnread reads and drops what the client is still sending, for up
// to a second, before the connection is closed: closing a TCP socket with
// unread data resets it, and the reset can destroy the error reply before
// the client reads it. Nothing read is kept.
func discardUnread(nc net.Conn) {
	if cw, ok := nc.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite() //nolint:errcheck // best effort
	}
	nc.SetReadDeadline(time.Now().Add(time.Second)) //nolint:errcheck
	var buf [32 << 10]byte
	for {
		if _, err := nc.Read(buf[:]); err != nil {
			return
		}
	}
}

// serveStream reads JSON values from r and writes a reply to w for each that
// needs one. It returns nil when r ends cleanly between values, and an error
// after a parse error (which is answered first: a JSON stream cannot be
// resynchronized, so SPDK closes the connection too), a write error, or
// shutdown.
//
// Requests of more than smallRequestBytes are read and handled holding a
// large-request slot (see requestReader); the slot is given back before the
// reply is written, so a client that does not read its replies holds none.
func (s *Server) serveStream(ctx context.Context, r io.Reader, w io.Writer) error {
	rr := newRequestReader(s, r)
	defer rr.release()
	dec := json.NewDecoder(rr)
	for {
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			if s.closing.Load() {
				return ErrServerClosed
			}
			return s.readFailed(w, err)
		}
		reply := s.handleValue(ctx, raw)
		raw = nil
		dec = rr.next(dec)
		if reply != nil {
			if _, err := w.Write(append(reply, '\n')); err != nil {
				return err
			}
		}
		if s.closing.Load() {
			return ErrServerClosed
		}
	}
}

// readFailed decides what a decode error means: a clean end of stream, a
// dead or closed socket, or a parse error that is answered before closing.
func (s *Server) readFailed(w io.Writer, err error) error {
	if err == io.EOF {
		return nil
	}
	var syn *json.SyntaxError
	var data string
	switch {
	case errors.As(err, &syn):
		data = fmt.Sprintf("%v at offset %d", syn, syn.Offset)
	case errors.Is(err, io.ErrUnexpectedEOF):
		data = "connection closed in the middle of a JSON value"
	case errors.Is(err, errTooLarge):
		data = fmt.Sprintf("request exceeds %d bytes; closing the connection", s.opts.MaxRequestBytes)
	case errors.Is(err, errSlowRequest):
		data = fmt.Sprintf("request of more than %d bytes not complete within %v; closing the connection", smallRequestBytes, s.opts.LargeRequestTimeout)
	default:
		return err // a read error: nobody to answer
	}
	s.log.Debug("jsonrpc parse error; closing connection", "reason", data)
	reply := s.encode(errorResponse(nil, &Error{Code: CodeParseError, Message: MsgParseError, Data: data}))
	w.Write(append(reply, '\n')) //nolint:errcheck // closing anyway
	return fmt.Errorf("parse error: %s: %w", data, err)
}

// Shutdown stops the server gracefully: it closes the listeners, lets every
// connection finish the request it is running, and waits for them to close.
// If ctx ends first, it closes everything as Close does and returns
// ctx.Err().
func (s *Server) Shutdown(ctx context.Context) error {
	s.beginClose()
	done := make(chan struct{})
	go func() {
		s.conns.Wait()
		close(done)
	}()
	select {
	case <-done:
		s.cancel()
		return nil
	case <-ctx.Done():
		s.Close()
		return ctx.Err()
	}
}

// Close stops the server at once: listeners and connections are closed and
// running handlers' contexts cancelled. Handlers still running finish in the
// background; their replies are lost.
func (s *Server) Close() error {
	s.beginClose()
	s.mu.Lock()
	for nc := range s.mu.conns {
		nc.Close()
	}
	s.mu.Unlock()
	// Cancel only now, so that no handler returning early because of the
	// cancellation can still get its reply out.
	s.cancel()
	return nil
}

// beginClose marks the server closing, closes its listeners and wakes every
// connection blocked reading, so that each exits after its current request.
func (s *Server) beginClose() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.closing.Swap(true) {
		close(s.done)
	}
	for l := range s.mu.listeners {
		l.Close()
		delete(s.mu.listeners, l)
	}
	for nc := range s.mu.conns {
		nc.SetReadDeadline(time.Now()) //nolint:errcheck // best effort wake-up
	}
}
