// Package rpc implements blockcache's JSON-RPC methods, SPDK-compatible
// (names, parameters, results and error codes as SPDK's rpc.py sends and
// expects them; docs/rpc.md lists them), one file per subsystem. It translates between the wire and
// the bdev registry, the OCF vbdev manager and the NBD server; errors are
// mapped to wire codes here and nowhere else.
package rpc

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"sync"
	"syscall"
	"time"

	"blockcache/internal/bdev"
	"blockcache/internal/jsonrpc"
	"blockcache/internal/nbd"
	"blockcache/internal/ocf"
	"blockcache/internal/poller"
	"blockcache/internal/vbdev"
)

// Services are what the methods act on. Every field but OnChange and Kill
// is required.
type Services struct {
	Registry *bdev.Registry
	OCF      *vbdev.Manager
	NBD      *nbd.Server
	// NBDURI returns the URI clients use to reach the export called name,
	// e.g. nbd://127.0.0.1:10809/name; nbd_start_disk returns it.
	NBDURI func(name string) string
	Log    *slog.Logger
	// Version is blockcache's version, reported by spdk_get_version.
	Version string
	// Kill handles spdk_kill_instance with a signal name (SIGTERM, ...).
	Kill func(sig string) error
	// OnChange is called after each successful method that changed the
	// daemon's configuration (to persist it).
	OnChange func()
	// IOPoll is the completion poll budget of the io_uring bdevs
	// (bdev_uring_create) made from now on: file.Options.Poll. Zero never
	// polls.
	IOPoll time.Duration
	// Pollers, if not nil, gets the completion checks of the delay,
	// io_uring and NBD client bdevs made from now on
	// (delay.Config.Pollers, file.Options.Pollers,
	// nbdremote.Options.Pollers); the NBD server runs them.
	Pollers *poller.Set
}

// API is the set of methods registered on a server.
type API struct {
	svc     Services
	srv     *jsonrpc.Server
	bases   *baseTable
	exports *exportTable
	// unsubscribe ends the registry subscription that starts pending
	// exports (nbd_pending.go).
	unsubscribe func()
	// sizing serialises creating RAM-backed bdevs, so that two creations
	// cannot both pass the memory check (malloc.New) before either has
	// taken its memory.
	sizing sync.Mutex
	// nbdRetries retry the start-up NBD client bdevs whose server was
	// down (nbdretry.go).
	nbdRetries *nbdRetries
}

// Register registers every method on srv.
func Register(srv *jsonrpc.Server, svc Services) *API {
	a := &API{svc: svc, srv: srv, bases: newBaseTable(), exports: newExportTable()}
	a.registerFramework()
	a.registerBdev()
	a.registerBaseModules()
	a.registerUring()
	a.registerWrappers()
	a.registerOCF()
	a.registerNBD()
	a.unsubscribe = svc.Registry.Subscribe(a.onBdevEvent)
	a.registerMetrics()
	return a
}

// handler is a method body with its params already split out.
type handler = jsonrpc.Handler

// mutating wraps a method that changes configuration so that OnChange runs
// after it succeeds.
func (a *API) mutating(h handler) handler {
	return func(ctx context.Context, params json.RawMessage) (any, error) {
		res, err := h(ctx, params)
		if err == nil && a.svc.OnChange != nil {
			a.svc.OnChange()
		}
		return res, err
	}
}

// Error replies used by several modules.
var (
	// errDecode is what SPDK's generic bdev modules answer to bad params.
	errDecode = &jsonrpc.Error{Code: jsonrpc.CodeInternalError, Message: jsonrpc.MsgDecodeFailed}
	// errInvalidParams is what the OCF module answers to bad params.
	errInvalidParams = &jsonrpc.Error{Code: jsonrpc.CodeInvalidParams, Message: jsonrpc.MsgInvalidParams}
)

// errnoOf maps an error from the layers below to the errno SPDK would
// report for it. It is the only such mapping in the RPC layer.
func errnoOf(err error) syscall.Errno {
	switch {
	case errors.Is(err, vbdev.ErrNameExists):
		return syscall.EPERM
	case errors.Is(err, vbdev.ErrInvalidParam):
		return syscall.EINVAL
	case errors.Is(err, vbdev.ErrNoSuchVbdev):
		return syscall.ENODEV
	case errors.Is(err, vbdev.ErrNotStarted):
		return syscall.ENODEV
	case errors.Is(err, vbdev.ErrForeignCache), errors.Is(err, vbdev.ErrNotBlank):
		return syscall.EEXIST
	case errors.Is(err, vbdev.ErrCoreMismatch):
		return syscall.EINVAL
	case errors.Is(err, ocf.ErrFlushCancelled):
		return syscall.ECANCELED
	case errors.Is(err, bdev.ErrDeviceClaimed):
		// SPDK's bdev_open refuses to open a claimed bdev for writing
		// with -EPERM ("module already claimed it"), which the OCF, delay,
		// error and NBD methods pass on.
		return syscall.EPERM
	}
	if errno, ok := nbdClientErrno(err); ok {
		return errno
	}
	return bdev.Errno(err)
}

// errnoReply is SPDK's "-errno, strerror" reply, with err's full text as
// data so the client learns what failed.
func errnoReply(err error) error {
	return jsonrpc.ErrnoError(errnoOf(err)).WithData("%s", err.Error())
}
