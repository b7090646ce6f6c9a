// Package nbd serves bdev.Devices over the Network Block Device protocol
// (fixed newstyle negotiation, simple and structured replies), as specified
// in github.com/NetworkBlockDevice/nbd doc/proto.md. The wire format itself
// (codes, flags, header encodings) is package nbdproto, which the NBD
// client bdev shares; this package is the server's logic.
//
// The code is laid out by protocol phase, like nbdkit's server/protocol*.c:
//
//	wire.go          the server's limits on the protocol (this file)
//	handshake.go     option haggling, up to NBD_OPT_GO / NBD_OPT_EXPORT_NAME
//	tls.go           NBD_OPT_STARTTLS: upgrading a connection to TLS
//	transmission.go  read a request, validate it, execute it
//	reply.go         simple and structured replies, batched under a write lock
//	rawsock.go       raw reads and writes of plain sockets through the poller
//	errors.go        sentinels, and errnoFor: error to NBD error value
//	server.go        exports, listeners, connections, Shutdown
//	conn.go          one client connection, from accept to close
//	options.go       the bounds on what clients may make the server hold
//	admission.go     connection admission: MaxConnections, descriptors
//	allow.go         allow-lists of addresses, users and groups
//	fds.go           counting open file descriptors against the limit
//	limiter.go       per-connection bounds on requests in flight
//	buffers.go       payload buffers in power-of-two size classes
//	trim.go          returning the pool's freed buffers to the OS
//	stats.go         per-export request statistics
package nbd

import "blockcache/internal/nbdproto"

// clientFlagsKnown are the client flags this server understands; a client
// sending others is refused.
const clientFlagsKnown = nbdproto.FlagCFixedNewstyle | nbdproto.FlagCNoZeroes

// maxPayloadBytes is the largest READ or WRITE payload accepted and the
// maximum advertised in NBD_INFO_BLOCK_SIZE: the specification's default.
const maxPayloadBytes = nbdproto.DefaultMaxPayload
