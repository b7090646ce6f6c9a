package nbd

import (
	"crypto/tls"
	"fmt"
	"time"

	"blockcache/internal/poller"
)

// Options bound what clients, together, can make the server hold: file
// descriptors, goroutines and payload memory. A zero field takes its
// default; a negative one is invalid.
type Options struct {
	// MaxConnections bounds the open connections of all listeners together,
	// from accept to close. A connection beyond it is accepted and closed
	// at once, so its client sees the connection end rather than hang in
	// the listen backlog.
	MaxConnections int
	// HandshakeTimeout bounds the negotiation, from accept until
	// transmission begins; a client still negotiating then is disconnected.
	HandshakeTimeout time.Duration
	// PayloadTimeout bounds how long a WRITE's payload may take to arrive,
	// counted from when the server starts reading it; a client slower than
	// that is disconnected. Idle time between requests is not bounded.
	PayloadTimeout time.Duration
	// MaxInflightBytes bounds the payload buffers (WRITE payloads, READ
	// data) held by the requests of all connections together. A request
	// that would exceed it waits, and its connection reads nothing more
	// until buffers are returned. It is at least MaxRequestBytes, so that
	// every valid request fits.
	MaxInflightBytes int64

	// TLS is whether NBD_OPT_STARTTLS is offered, and required (see
	// TLSMode); TLSConfig, which LoadTLSConfig makes, must be set unless it
	// is TLSOff.
	TLS       TLSMode
	TLSConfig *tls.Config

	// Allow, if not nil, restricts which clients are admitted; the others
	// are closed before the handshake.
	Allow *AllowList

	// Pollers, if not nil, are the devices' completion checks, run by a
	// reader polling an empty socket (see readSpin), so that a completion
	// signalled through the runtime's network poller is not kept waiting
	// by the reader's own polling.
	Pollers *poller.Set
}

// Defaults of Options.
const (
	DefaultMaxConnections   = 1024
	DefaultHandshakeTimeout = 30 * time.Second
	DefaultPayloadTimeout   = 30 * time.Second
	DefaultMaxInflightBytes = 256 << 20
)

// MaxRequestBytes is the largest READ or WRITE the server accepts (and
// advertises in NBD_INFO_BLOCK_SIZE).
const MaxRequestBytes = maxPayloadBytes

// withDefaults returns o with its zero fields set to their defaults, or an
// error wrapping ErrInvalidOptions naming the first field out of range.
func (o Options) withDefaults() (Options, error) {
	switch {
	case o.MaxConnections < 0:
		return o, fmt.Errorf("%w: max connections %d is negative", ErrInvalidOptions, o.MaxConnections)
	case o.HandshakeTimeout < 0:
		return o, fmt.Errorf("%w: handshake timeout %v is negative", ErrInvalidOptions, o.HandshakeTimeout)
	case o.PayloadTimeout < 0:
		return o, fmt.Errorf("%w: payload timeout %v is negative", ErrInvalidOptions, o.PayloadTimeout)
	case o.MaxInflightBytes < 0 || (o.MaxInflightBytes > 0 && o.MaxInflightBytes < MaxRequestBytes):
		return o, fmt.Errorf("%w: max in-flight bytes %d is less than the largest request, %d bytes",
			ErrInvalidOptions, o.MaxInflightBytes, MaxRequestBytes)
	case o.TLS < TLSOff || o.TLS > TLSRequire:
		return o, fmt.Errorf("%w: TLS mode %v", ErrInvalidOptions, o.TLS)
	case o.TLS != TLSOff && o.TLSConfig == nil:
		return o, fmt.Errorf("%w: TLS mode %v without a TLS configuration", ErrInvalidOptions, o.TLS)
	}
	if o.MaxConnections == 0 {
		o.MaxConnections = DefaultMaxConnections
	}
	if o.HandshakeTimeout == 0 {
		o.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if o.PayloadTimeout == 0 {
		o.PayloadTimeout = DefaultPayloadTimeout
	}
	if o.MaxInflightBytes == 0 {
		o.MaxInflightBytes = DefaultMaxInflightBytes
	}
	return o, nil
}
