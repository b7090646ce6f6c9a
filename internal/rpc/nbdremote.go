package rpc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"syscall"
	"time"

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
	a.srv.Register("bdev_nbd_client_create", a.mutating(a.nbdClientCreate))
	a.srv.Register("bdev_nbd_client_delete", a.mutating(a.deleteBase("nbd_client")))
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

func (a *API) nbdClientCreate(_ context.Context, params json.RawMessage) (any, error) {
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
	if _, err := a.svc.Registry.Lookup(p.Name); err == nil {
		return nil, errnoReply(fmt.Errorf("bdev_nbd_client_create: name %q is taken: %w", p.Name, bdev.ErrExists))
	}
	log := a.svc.Log.With("bdev", p.Name, "uri", uri.String())
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
	d, err := nbdremote.Open(p.Name, uri, id, opts)
	if err != nil {
		registered <- nil
		return nil, errnoReply(fmt.Errorf("bdev_nbd_client_create: %w", err))
	}
	cfg.URI, cfg.UUID = uri.String(), d.Info().UUID.String()
	b := &baseBdev{
		name: p.Name, module: "nbd_client", dev: d,
		config: func() configEntry { return configEntry{Method: "bdev_nbd_client_create", Params: cfg} },
		driverSpecific: func() any {
			var ds nbdClientDriverSpecific
			st := d.Status()
			x := &ds.NBDClient
			x.nbdClientConfig, x.Export = cfg, uri.Export
			x.State, x.Reconnects, x.LastError = string(st.State), st.Reconnects, st.LastError
			x.ReadOnly, x.Flush, x.FUA, x.Trim, x.WriteZeroes, x.MultiConn = st.ReadOnly, st.Flush, st.FUA, st.Trim, st.Zero, st.MultiConn
			x.OpenConnections = st.Connections
			return ds
		},
	}
	if err := a.registerBase(b); err != nil {
		registered <- nil
		return nil, err
	}
	registered <- b
	if cfg.Connections > 1 && d.Status().Connections == 1 {
		log.Warn("NBD client: the server does not advertise multi-conn: one connection", "connections", cfg.Connections)
	}
	return p.Name, nil
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
