package nbdremote

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"

	"blockcache/internal/bdev"
)

// Sentinel errors. Each error the package returns wraps at most one of them;
// errors from the network keep their syscall.Errno (ECONNREFUSED, ...).
var (
	// ErrBadURI marks a URI that is not one of libnbd's NBD URI forms this
	// client supports.
	ErrBadURI = errors.New("bad NBD URI")
	// ErrTLSNotSupported marks a TLS feature this client does not have
	// (pre-shared keys: Go's crypto/tls has none), or a server that
	// requires TLS from an nbd:// URI. It wraps bdev.ErrNotSupported.
	ErrTLSNotSupported = fmt.Errorf("TLS feature not supported: %w", bdev.ErrNotSupported)
	// ErrTLSRefused means the server refused NBD_OPT_STARTTLS to an
	// nbds:// URI; the client never falls back to plain text. It wraps
	// bdev.ErrNotSupported.
	ErrTLSRefused = fmt.Errorf("the NBD server does not do TLS: %w", bdev.ErrNotSupported)
	// ErrTLSHandshake means the TLS session could not be established: the
	// server's certificate is not trusted or does not name the host, or
	// the server rejected the client's certificate. It wraps EACCES.
	ErrTLSHandshake = fmt.Errorf("TLS handshake with the NBD server failed: %w", syscall.EACCES)
	// ErrTLSCredentials means the certificate directory cannot be used: a
	// file is missing, unreadable or not PEM. It wraps EINVAL.
	ErrTLSCredentials = fmt.Errorf("bad NBD client TLS credentials: %w", syscall.EINVAL)
	// ErrInvalidOptions marks reconnect knobs that break SPDK's rules
	// between them, or another option out of range.
	ErrInvalidOptions = errors.New("invalid NBD client options")
	// ErrExportRefused means the server does not serve the export asked for,
	// or refuses it to this client (NBD_REP_ERR_UNKNOWN, _POLICY, ...).
	ErrExportRefused = errors.New("export refused by the NBD server")
	// ErrProtocol means the server broke the protocol; the connection is
	// dropped.
	ErrProtocol = errors.New("NBD protocol violation")
	// ErrTimeout means a request or the handshake took longer than the
	// IO timeout; the connection is dropped and the request resent.
	ErrTimeout = fmt.Errorf("NBD server did not answer in time: %w", syscall.ETIMEDOUT)
	// ErrDisconnected is returned by IO that waited fast_io_fail_timeout
	// for a lost connection to come back. It wraps EIO.
	ErrDisconnected = fmt.Errorf("NBD server unreachable: %w", syscall.EIO)
	// ErrLost is returned once ctrlr_loss_timeout ran out: the device gave
	// up on the server and is going away. It wraps bdev.ErrClosed.
	ErrLost = fmt.Errorf("NBD server lost for good: %w", bdev.ErrClosed)
)

// errHungUp is a server that closed the connection in the middle of the
// handshake: a protocol violation (-71), but also what a server going down
// or starting up does, so Unreachable counts it.
var errHungUp = fmt.Errorf("the server closed the connection: %w", ErrProtocol)

// Unreachable reports whether err, from Open, means the server could not
// be reached or the session not set up: the connection refused, reset or
// timed out, no route, a Unix socket that is not there, the server
// hanging up before the handshake ended, a TLS handshake that failed. Trying again
// later may succeed. It is false for what only a change of parameters or
// of the server's configuration fixes: a bad URI or options, unusable TLS
// credentials, an export refused, a server without TLS for an nbds URI, a
// protocol violation.
func Unreachable(err error) bool {
	if errors.Is(err, errHungUp) {
		return true
	}
	for _, permanent := range []error{ErrBadURI, ErrInvalidOptions, ErrTLSCredentials, ErrTLSNotSupported,
		ErrTLSRefused, ErrExportRefused, ErrProtocol, context.Canceled} {
		if errors.Is(err, permanent) {
			return false
		}
	}
	var ne net.Error
	return errors.As(err, &ne) || errors.Is(err, ErrTimeout) || errors.Is(err, ErrTLSHandshake) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.EHOSTUNREACH) || errors.Is(err, syscall.ENETUNREACH)
}

// ServerError is an error the server returned for one request.
type ServerError struct {
	Errno   syscall.Errno
	Message string // from a structured error chunk, or ""
}

func (e *ServerError) Error() string {
	if e.Message != "" {
		return fmt.Sprintf("server error %d (%v): %s", int(e.Errno), e.Errno, e.Message)
	}
	return fmt.Sprintf("server error %d (%v)", int(e.Errno), e.Errno)
}

func (e *ServerError) Unwrap() error { return e.Errno }
