package nbd

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// Admission of connections. Each connection holds a file descriptor, a
// goroutine and a read buffer from accept to close, so the server bounds
// them: at most Options.MaxConnections at once, and none while descriptors
// run short (see fdGuard). A refused connection is accepted and closed at
// once: left in the listen backlog, its client would wait for a greeting
// that never comes.

var errAtConnectionCap = errors.New("at the connection cap")

// refusalLogEvery is how often at most a refused connection is logged.
const refusalLogEvery = 10 * time.Second

// admit makes a conn of nc and registers it, or says why not: the
// allow-lists, the connection cap or the descriptor reserve (nc is then
// the caller's to close), or ErrServerClosed.
func (s *Server) admit(nc net.Conn) (*conn, error) {
	if err := s.allowed(nc); err != nil {
		return nil, err
	}
	// The cap first: it is cheap, and a connection it refuses must not
	// count in the descriptor estimate.
	if err := s.roomFor(); err != nil {
		return nil, err
	}
	if err := s.fds.admit(time.Now()); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.roomForLocked(); err != nil {
		return nil, err // another listener's connection took the last slot
	}
	if s.opts.TLS != TLSOff {
		nc = &upgradableConn{raw: nc}
	}
	c := newConn(s, nc)
	s.mu.conns[c] = struct{}{}
	return c, nil
}

// roomFor reports why the server takes no more connections, or nil.
func (s *Server) roomFor() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.roomForLocked()
}

func (s *Server) roomForLocked() error {
	if s.mu.shuttingDown {
		return ErrServerClosed
	}
	if len(s.mu.conns) >= s.opts.MaxConnections {
		return fmt.Errorf("%w of %d connections", errAtConnectionCap, s.opts.MaxConnections)
	}
	return nil
}

// refuse closes a connection admit refused, and logs it unless another
// was logged less than refusalLogEvery ago; the next line logged counts
// those that were not.
func (s *Server) refuse(nc net.Conn, why error) {
	remote := nc.RemoteAddr().String()
	nc.Close()
	if ok, unlogged := s.refusals.note(time.Now()); ok {
		s.log.Warn("nbd connection refused", "remote", remote, "reason", why.Error(), "unlogged_refusals", unlogged)
	}
}

// refusalLog rate-limits the log lines of refused connections.
type refusalLog struct {
	mu       sync.Mutex
	last     time.Time // when a refusal was last logged
	unlogged int       // refusals since then
}

// note counts a refusal and reports whether to log it, and how many were
// not logged before it.
func (r *refusalLog) note(now time.Time) (log bool, unlogged int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.last.IsZero() && now.Sub(r.last) < refusalLogEvery {
		r.unlogged++
		return false, 0
	}
	unlogged, r.unlogged, r.last = r.unlogged, 0, now
	return true, unlogged
}
