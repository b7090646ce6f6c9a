package rpc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"syscall"
	"time"

	"github.com/google/uuid"

	"blockcache/internal/bdev"
	"blockcache/internal/bdev/nbdremote"
	"blockcache/internal/jsonrpc"
)

// nbdClientParams are bdev_nbd_client_create's parameters (ours; the
// reconnect knobs are bdev_nvme_attach_controller's). Unset knobs take
// blockcache's defaults (nbdremote.DefaultOptions), bounded so that they
// obey SPDK's rules with the knobs given: with ctrlr_loss_timeout_sec 0 the
// others default to 0, with a positive one fast_io_fail_timeout_sec
// defaults to at most it.
type nbdClientParams struct {
	Name                 string  `json:"name" rpc:"required"`
	URI                  string  `json:"uri" rpc:"required"`
	UUID                 string  `json:"uuid"`
	Connections          *int    `json:"connections"`
	ReconnectDelaySec    *uint32 `json:"reconnect_delay_sec"`
	CtrlrLossTimeoutSec  *int32  `json:"ctrlr_loss_timeout_sec"`
	FastIOFailTimeoutSec *uint32 `json:"fast_io_fail_timeout_sec"`
	IOTimeoutSec         *uint32 `json:"io_timeout_sec"`
}

// nbdClientConfig is the config entry: every knob resolved.
type nbdClientConfig struct {
	Name                 string `json:"name"`
	URI                  string `json:"uri"`
	UUID                 string `json:"uuid"`
	Connections          int    `json:"connections"`
	ReconnectDelaySec    uint32 `json:"reconnect_delay_sec"`
	CtrlrLossTimeoutSec  int32  `json:"ctrlr_loss_timeout_sec"`
	FastIOFailTimeoutSec uint32 `json:"fast_io_fail_timeout_sec"`
	IOTimeoutSec         uint32 `json:"io_timeout_sec"`
}

type nbdClientDriverSpecific struct {
	NBDClient struct {
		nbdClientConfig
		Export      string `json:"export"`
		State       string `json:"state"`
		Reconnects  uint64 `json:"reconnects"`
		LastError   string `json:"last_error,omitempty"`
		ReadOnly    bool   `json:"read_only"`
		Flush       bool   `json:"flush"`
		FUA         bool   `json:"fua"`
		Trim        bool   `json:"trim"`
		WriteZeroes bool   `json:"write_zeroes"`
		MultiConn   bool   `json:"multi_conn"`
		// Connections (embedded) is what was asked; OpenConnections what
		// the server's multi-conn allows.
		OpenConnections int `json:"open_connections"`
	} `json:"nbd_client"`
}

func (a *API) registerNBDClient() {
	a.nbdRetries = newNBDRetries(a.svc.OnChange)
	a.srv.Register("bdev_nbd_client_create", a.mutating(a.nbdClientCreate))
	a.srv.Register("bdev_nbd_client_delete", a.mutating(a.nbdClientDelete))
}

// resolve fills the unset knobs and returns the options and config.
func (p *nbdClientParams) resolve() (nbdremote.Options, nbdClientConfig) {
	o := nbdremote.DefaultOptions()
	cfg := nbdClientConfig{Name: p.Name, Connections: 1, ReconnectDelaySec: 1, CtrlrLossTimeoutSec: -1,
		FastIOFailTimeoutSec: uint32(nbdremote.DefaultFastIOFailTimeout / time.Second),
		IOTimeoutSec:         uint32(nbdremote.DefaultIOTimeout / time.Second)}
	if p.CtrlrLossTimeoutSec != nil {
		cfg.CtrlrLossTimeoutSec = *p.CtrlrLossTimeoutSec
		switch loss := *p.CtrlrLossTimeoutSec; {
		case loss == 0:
			cfg.ReconnectDelaySec, cfg.FastIOFailTimeoutSec = 0, 0
		case loss > 0:
			cfg.FastIOFailTimeoutSec = min(cfg.FastIOFailTimeoutSec, uint32(loss))
		}
	}
	if p.Connections != nil {
		cfg.Connections = *p.Connections
	}
	if p.ReconnectDelaySec != nil {
		cfg.ReconnectDelaySec = *p.ReconnectDelaySec
	}
	if p.FastIOFailTimeoutSec != nil {
		cfg.FastIOFailTimeoutSec = *p.FastIOFailTimeoutSec
	}
	if p.IOTimeoutSec != nil {
		cfg.IOTimeoutSec = *p.IOTimeoutSec
	}
	sec := func(v int64) time.Duration { return time.Duration(v) * time.Second }
	o.Connections = cfg.Connections
	o.ReconnectDelay = sec(int64(cfg.ReconnectDelaySec))
	o.CtrlrLossTimeout = sec(int64(cfg.CtrlrLossTimeoutSec))
	o.FastIOFailTimeout = sec(int64(cfg.FastIOFailTimeoutSec))
	o.IOTimeout = sec(int64(cfg.IOTimeoutSec))
	return o, cfg
}

// nbdClientSpec is a checked bdev_nbd_client_create call: what creating
// the bdev takes.
type nbdClientSpec struct {
	name string
	uri  nbdremote.URI
	id   uuid.UUID
	opts nbdremote.Options
	cfg  nbdClientConfig // URI in canonical form; UUID as given
}

// nbdClientCreate creates the bdev, or fails at once when the server
// cannot be reached, as SPDK's attach does. Replaying the start-up config
// it succeeds instead, and the entry is retried in the background
// (nbdRetries). A create of a name being retried replaces the retry; if
// it fails, the retry goes on as it was.
func (a *API) nbdClientCreate(ctx context.Context, params json.RawMessage) (any, error) {
	var p nbdClientParams
	if err := jsonrpc.DecodeParams(params, &p, errDecode); err != nil {
		return nil, err
	}
	id, err := parseUUID(p.UUID)
	if err != nil {
		return nil, err
	}
	uri, err := nbdremote.ParseURI(p.URI)
	if err != nil {
		return nil, errnoReply(fmt.Errorf("bdev_nbd_client_create %q: %w", p.Name, err))
	}
	opts, cfg := p.resolve()
	if err := opts.Validate(); err != nil {
		return nil, errnoReply(fmt.Errorf("bdev_nbd_client_create %q: %w", p.Name, err))
	}
	cfg.URI, cfg.UUID = uri.String(), p.UUID
	s := nbdClientSpec{name: p.Name, uri: uri, id: id, opts: opts, cfg: cfg}
	log := a.svc.Log.With("bdev", p.Name, "uri", uri.String())
	prev := a.nbdRetries.pause(p.Name)
	err = a.createNBDClient(ctx, s, log)
	switch {
	case err == nil:
		if prev != nil {
			a.nbdRetries.forget(prev)
			log.Info("NBD client: created by hand; the start-up retry is over")
		}
		return p.Name, nil
	case prev != nil:
		a.nbdRetries.resume(prev)
	case atStartup(ctx) && cfg.CtrlrLossTimeoutSec != 0 && nbdremote.Unreachable(err):
		a.nbdRetries.start(s, log, err, func(ctx context.Context) error { return a.createNBDClient(ctx, s, log) })
		return p.Name, nil
	}
	var je *jsonrpc.Error
	if errors.As(err, &je) {
		return nil, err
	}
	return nil, errnoReply(fmt.Errorf("bdev_nbd_client_create: %w", err))
}

// createNBDClient connects to the server and registers the bdev; the
// error is the client's, unmapped, or a reply. Cancelling ctx abandons
// the connect, and a device connected by then is closed unregistered.
func (a *API) createNBDClient(ctx context.Context, s nbdClientSpec, log *slog.Logger) error {
	if _, err := a.svc.Registry.Lookup(s.name); err == nil {
		return fmt.Errorf("name %q is taken: %w", s.name, bdev.ErrExists)
	}
	cfg, opts := s.cfg, s.opts
	opts.OnEvent = func(msg string, err error) {
		if err != nil {
			log.Warn("NBD client: "+msg, "err", err)
		} else {
			log.Info("NBD client: " + msg)
		}
	}
	registered := make(chan *baseBdev, 1)
	opts.OnLost = func() {
		if b := <-registered; b != nil {
			if err := a.removeBase(b, fmt.Sprintf("the NBD server was unreachable for ctrlr_loss_timeout_sec %d", cfg.CtrlrLossTimeoutSec)); err != nil {
				log.Warn("NBD client: remove after the server was lost", "err", err)
			}
		}
	}
	opts.Pollers = a.svc.Pollers
	d, err := nbdremote.OpenContext(ctx, s.name, s.uri, s.id, opts)
	if err == nil && ctx.Err() != nil {
		d.Close()
		err = context.Cause(ctx)
	}
	if err != nil {
		registered <- nil
		return err
	}
	cfg.UUID = d.Info().UUID.String()
	b := &baseBdev{
		name: s.name, module: "nbd_client", dev: d,
		config: fixedConfig("bdev_nbd_client_create", cfg),
		driverSpecific: func() any {
			var ds nbdClientDriverSpecific
			st := d.Status()
			x := &ds.NBDClient
			x.nbdClientConfig, x.Export = cfg, s.uri.Export
			x.State, x.Reconnects, x.LastError = string(st.State), st.Reconnects, st.LastError
			x.ReadOnly, x.Flush, x.FUA, x.Trim, x.WriteZeroes, x.MultiConn = st.ReadOnly, st.Flush, st.FUA, st.Trim, st.Zero, st.MultiConn
			x.OpenConnections = st.Connections
			return ds
		},
	}
	if err := a.registerBase(b); err != nil {
		registered <- nil
		return err
	}
	registered <- b
	if cfg.Connections > 1 && d.Status().Connections == 1 {
		log.Warn("NBD client: the server does not advertise multi-conn: one connection", "connections", cfg.Connections)
	}
	return nil
}

// nbdClientDelete deletes the bdev, or ends the start-up retry of one
// whose server was not reached yet. A bdev of another module holding the
// retried name is left alone.
func (a *API) nbdClientDelete(ctx context.Context, params json.RawMessage) (any, error) {
	var p deleteParams
	if err := jsonrpc.DecodeParams(params, &p, errDecode); err != nil {
		return nil, err
	}
	if r := a.nbdRetries.remove(p.Name); r != nil {
		switch b := a.bases.get(p.Name); {
		case b == nil:
			r.log.Info("NBD client: deleted; the start-up retry is over", "attempts", r.attempts)
			a.deleting(p.Name)(true)
			return true, nil
		case b.module != "nbd_client":
			r.log.Info("NBD client: deleted; the start-up retry is over; the "+b.module+" bdev of the name stays", "attempts", r.attempts)
			return true, nil
		}
	}
	return a.deleteBase("nbd_client")(ctx, params)
}

// nbdClientErrno maps the NBD client's errors to errnos; ok is false for
// errors it does not know, left to errnoOf's other cases.
func nbdClientErrno(err error) (errno syscall.Errno, ok bool) {
	var ne net.Error
	switch {
	case errors.Is(err, nbdremote.ErrBadURI), errors.Is(err, nbdremote.ErrInvalidOptions):
		return syscall.EINVAL, true
	case errors.Is(err, nbdremote.ErrExportRefused):
		return syscall.ENXIO, true
	case errors.Is(err, nbdremote.ErrProtocol):
		return syscall.EPROTO, true
	case errors.As(err, &ne) && ne.Timeout():
		return syscall.ETIMEDOUT, true
	}
	return 0, false
}
