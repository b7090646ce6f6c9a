// Package jsonrpc is blockcache's JSON-RPC 2.0 transport, wire-compatible
// with SPDK's lib/jsonrpc and lib/rpc so that SPDK's scripts/rpc.py and
// SPDK-style JSON config files work unchanged.
//
// # Wire format
//
// A connection carries a stream of JSON values in each direction. Requests
// need no separator: rpc.py sends each request pretty-printed with no
// trailing newline and waits for the reply, other clients pipeline. Each
// complete value is one request object or one batch (array):
//
//	{"jsonrpc":"2.0","method":"bdev_ocf_get_bdevs","id":1,"params":{"name":"C1"}}
//
// and each reply is one compact JSON value followed by "\n", as SPDK writes
// it, members in SPDK's order, non-ASCII escaped as \uXXXX:
//
//	{"jsonrpc":"2.0","id":1,"result":[...]}
//	{"jsonrpc":"2.0","id":1,"error":{"code":-32602,"message":"No such device"}}
//
// Malformed JSON is answered with -32700 "Parse error" (id null) and the
// connection is closed, since a JSON stream cannot be resynchronized. A value
// that is not a valid request gets -32600 "Invalid request". A request
// without "id" is a notification and gets no reply; a batch gets an array of
// the replies that are due (SPDK itself rejects batches with -32600; this is
// the JSON-RPC 2.0 superset). Methods return their own codes, including
// SPDK's "-errno, strerror(errno)" errors (ErrnoError).
//
// # Limits
//
// One client cannot make the server hold much: a request (a top-level value,
// a whole batch included) of more than Options.MaxRequestBytes (4 MiB) is
// answered with -32700 and the connection closed; a connection buffers at
// most 64 KiB of a request unless it holds one of Options.MaxLargeRequests
// (2) server-wide slots, which it must fill within
// Options.LargeRequestTimeout (30 s); an id longer than 128 bytes (SPDK's
// limit) or a batch of more than 128 requests is -32600. Error messages
// quote client input as excerpts (internal/excerpt), and every error's
// message and data are cut to 512 bytes.
//
// # States
//
// Like SPDK, the server is in a State: StateStartup until the framework is
// initialized (framework_start_init), StateRuntime after. Each method is
// allowed in a set of states; calling it in another gets -32604 with SPDK's
// message, and rpc_get_methods {"current":true} lists only what is callable
// now, which is how load_config steps a config file through the states.
package jsonrpc
