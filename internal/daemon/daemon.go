// Package daemon wires blockcache together: the bdev registry, the OCF
// vbdev manager, the NBD server and the JSON-RPC server, the start-up config
// (a JSON config file, the persisted state of a data directory, or the
// embedded default) and the orderly shutdown.
package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"time"

	"blockcache/internal/bdev"
	"blockcache/internal/jsonrpc"
	"blockcache/internal/nbd"
	"blockcache/internal/poller"
	"blockcache/internal/rpc"
	"blockcache/internal/vbdev"
)

// Config configures a daemon.
type Config struct {
	// RPCSocket is the JSON-RPC Unix socket path.
	RPCSocket string
	// ConfigFile, if set, is an SPDK JSON config replayed at start instead
	// of the data directory's persisted state.
	ConfigFile string
	// INIFile, if set, is a legacy SPDK INI config ([Malloc], [AIO], [OCF]
	// sections) replayed at start instead of the persisted state.
	INIFile string
	// DataDir holds the persisted config (config.json) and the embedded
	// default's image files. Ignored with Bare.
	DataDir string
	// NBDListen is the TCP address of the NBD server; empty for none.
	NBDListen string
	// NBDSocket is a Unix socket path for the NBD server; empty for none.
	NBDSocket string
	// NBDSocketMode is the NBD Unix socket's mode; zero means
	// DefaultNBDSocketMode (0600).
	NBDSocketMode fs.FileMode
	// RPCGroup, if set, is a group (name or number) given the RPC socket,
	// with mode 0660 instead of 0600: its members can do anything root
	// can through the daemon.
	RPCGroup string
	// NBD bounds what NBD clients can make the daemon hold (connections,
	// negotiation and payload time, payload bytes in flight); zero fields
	// take nbd's defaults.
	NBD nbd.Options
	// MetricsListen is the TCP address serving /metrics for Prometheus;
	// empty for none (the default).
	MetricsListen string
	// Bare starts with no bdevs and persists nothing, like an SPDK target.
	Bare bool
	// ShutdownFlush writes each cache's dirty data back to its cores at
	// shutdown. Without it the dirty data stays in the caches (their
	// metadata is persistent) and is loaded at the next start.
	ShutdownFlush bool
	// IOPoll is the completion poll budget of io_uring bdevs: with IO in
	// flight a ring polls for its completions for up to this long before
	// it sleeps, at the price of a CPU kept busy (uring.Options.Poll).
	// Zero, the default, never polls.
	IOPoll time.Duration
	// Log receives one line per management event.
	Log *slog.Logger
	// Version is reported by spdk_get_version.
	Version string
	// OnReady, if set, is called once the start-up config is loaded and
	// every server accepts connections.
	OnReady func(*Daemon)
}

// ConfigFileName is the persisted config inside the data directory.
const ConfigFileName = "config.json"

// Daemon is a running blockcache.
type Daemon struct {
	cfg Config
	log *slog.Logger

	reg *bdev.Registry
	ocf *vbdev.Manager
	nbd *nbd.Server
	rpc *jsonrpc.Server
	api *rpc.API

	rpcListener net.Listener
	nbdTCP      net.Listener
	nbdUnix     net.Listener
	metrics     *metricsServer // nil unless Config.MetricsListen

	// persist is false while the start-up config replays and with Bare.
	persistMu  sync.Mutex
	persist    bool
	persistLog persistLog // guarded by persistMu
	// carried are the start-up entries that failed, kept in the persisted
	// config while they apply (carry.go).
	carried carried

	stop     chan string // spdk_kill_instance's signal name
	stopOnce sync.Once

	// dirLock holds the data directory (nil with Bare) from the start of
	// New until shutdown has closed every device (lock.go).
	dirLock *dirLock
}

// New builds a daemon, takes its data directory's lock (unless Bare; a
// directory another daemon holds fails with ErrDataDirInUse before
// anything is touched) and opens its sockets; nothing is served until Run.
func New(cfg Config) (*Daemon, error) {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	// The NBD readers run the delay, io_uring and NBD client bdevs'
	// completion checks (package poller).
	pollers := new(poller.Set)
	nbdOpts := cfg.NBD
	nbdOpts.Pollers = pollers
	nbdServer, err := nbd.NewServer(cfg.Log, nbdOpts)
	if err != nil {
		return nil, err
	}
	d := &Daemon{cfg: cfg, log: cfg.Log, nbd: nbdServer, stop: make(chan string, 1)}
	if !cfg.Bare {
		var err error
		if d.dirLock, err = lockDataDir(cfg.DataDir); err != nil {
			return nil, err
		}
		if err := secureDataDir(cfg.DataDir, d.log); err != nil {
			d.dirLock.release()
			return nil, err
		}
	}
	d.reg = bdev.NewRegistry()
	d.ocf = vbdev.NewManager(d.reg, d.log)
	d.rpc = jsonrpc.NewServer(jsonrpc.Options{Logger: d.log})
	d.rpc.SetState(jsonrpc.StateRuntime)

	if d.rpcListener, err = d.listenRPC(); err != nil {
		d.dirLock.release()
		return nil, fmt.Errorf("rpc socket: %w", err)
	}
	if cfg.NBDListen != "" {
		if d.nbdTCP, err = net.Listen("tcp", cfg.NBDListen); err != nil {
			d.closeListeners()
			d.dirLock.release()
			return nil, fmt.Errorf("nbd listen %s: %w", cfg.NBDListen, err)
		}
	}
	if cfg.NBDSocket != "" {
		if d.nbdUnix, err = d.listenNBDUnix(); err != nil {
			d.closeListeners()
			d.dirLock.release()
			return nil, fmt.Errorf("nbd socket %s: %w", cfg.NBDSocket, err)
		}
	}
	if err = d.listenMetrics(cfg.MetricsListen); err != nil {
		d.closeListeners()
		d.dirLock.release()
		return nil, err
	}
	d.api = rpc.Register(d.rpc, rpc.Services{
		Registry: d.reg,
		OCF:      d.ocf,
		NBD:      d.nbd,
		NBDURI:   d.nbdURI,
		Log:      d.log,
		Version:  cfg.Version,
		Kill:     d.kill,
		OnChange: d.saveState,
		IOPoll:   cfg.IOPoll,
		Pollers:  pollers,
	})
	return d, nil
}

func (d *Daemon) closeListeners() {
	for _, l := range []net.Listener{d.rpcListener, d.nbdTCP, d.nbdUnix} {
		if l != nil {
			l.Close()
		}
	}
}

// Exports returns the started NBD exports' URIs by bdev name.
func (d *Daemon) Exports() map[string]string {
	out := map[string]string{}
	for _, e := range d.nbd.Exports() {
		out[e.Name] = d.nbdURI(e.Name)
	}
	return out
}

// NBDAddr returns the NBD server's TCP address, or nil.
func (d *Daemon) NBDAddr() net.Addr {
	if d.nbdTCP == nil {
		return nil
	}
	return d.nbdTCP.Addr()
}

// nbdURI is how clients reach an export: over TCP when the server listens
// there, else over its Unix socket.
func (d *Daemon) nbdURI(name string) string {
	esc := url.PathEscape(name)
	scheme := "nbd" // nbds when clients must use TLS
	if d.cfg.NBD.TLS == nbd.TLSRequire {
		scheme = "nbds"
	}
	if d.nbdTCP != nil {
		return fmt.Sprintf("%s://%s/%s", scheme, d.nbdTCP.Addr(), esc)
	}
	if d.nbdUnix != nil {
		return fmt.Sprintf("%s+unix:///%s?socket=%s", scheme, esc, d.cfg.NBDSocket)
	}
	return scheme + ":///" + esc
}

func (d *Daemon) kill(sig string) error {
	d.stopOnce.Do(func() { d.stop <- sig })
	return nil
}

// Run loads the start-up config, serves until ctx is cancelled or
// spdk_kill_instance is called, then shuts down in order: no new RPCs or NBD
// connections, NBD clients drained and devices flushed, each cache's dirty
// data written back and the caches stopped, base bdevs closed.
func (d *Daemon) Run(ctx context.Context) error {
	errc := make(chan error, 4)
	go func() { errc <- serveErr("rpc", d.rpc.Serve(d.rpcListener), jsonrpc.ErrServerClosed) }()
	for _, l := range []net.Listener{d.nbdTCP, d.nbdUnix} {
		if l != nil {
			go func() { errc <- serveErr("nbd", d.nbd.Serve(l), nbd.ErrServerClosed) }()
		}
	}
	if d.metrics != nil {
		go func() { errc <- d.metrics.serve() }()
	}
	if err := d.loadStartupConfig(ctx); err != nil {
		d.shutdown()
		return err
	}
	d.log.Info("blockcache ready", "rpc_socket", d.cfg.RPCSocket, "nbd", d.nbdURI(""), "data_dir", d.dataDir())
	if d.cfg.OnReady != nil {
		d.cfg.OnReady(d)
	}

	var runErr error
	select {
	case <-ctx.Done():
		d.log.Info("shutting down", "reason", context.Cause(ctx))
	case sig := <-d.stop:
		d.log.Info("shutting down", "reason", "spdk_kill_instance "+sig)
	case err := <-errc:
		runErr = err
		d.log.Error("server failed; shutting down", "err", err)
	}
	if err := d.shutdown(); err != nil && runErr == nil {
		runErr = err
	}
	return runErr
}

func serveErr(what string, err, closed error) error {
	if err == nil || errors.Is(err, closed) {
		return nil
	}
	return fmt.Errorf("%s server: %w", what, err)
}

// Shutdown time limits: running RPC handlers get rpcShutdownGrace before
// their contexts are cancelled; NBD clients get nbdShutdownTimeout to finish
// the requests they sent.
const (
	rpcShutdownGrace   = 5 * time.Second
	nbdShutdownTimeout = 30 * time.Second
)

func (d *Daemon) shutdown() error {
	d.persistMu.Lock()
	d.persist = false // teardown is not a configuration change
	d.persistMu.Unlock()

	var errs []error
	// RPCs that wait (bdev_get_bdevs with a timeout) do not end on their
	// own: give running handlers a moment, then cancel them. That is the
	// normal way out for such calls, not a failed shutdown, and it must not
	// eat into the time NBD clients get to drain.
	rpcCtx, cancelRPC := context.WithTimeout(context.Background(), rpcShutdownGrace)
	if err := d.rpc.Shutdown(rpcCtx); err != nil {
		d.log.Warn("rpc shutdown: handlers still running were cancelled", "grace", rpcShutdownGrace, "err", err)
	}
	cancelRPC()
	d.api.StopNBDClientRetries()
	if d.metrics != nil {
		d.metrics.shutdown()
	}
	ctx, cancel := context.WithTimeout(context.Background(), nbdShutdownTimeout)
	defer cancel()
	if err := d.nbd.Shutdown(ctx); err != nil {
		errs = append(errs, fmt.Errorf("nbd shutdown: %w", err))
	}
	d.api.StopExports()
	if err := d.ocf.Shutdown(d.cfg.ShutdownFlush); err != nil {
		errs = append(errs, err)
	}
	d.ocf.Close()
	for _, dev := range d.reg.List() {
		name := dev.Info().Name
		if dev, err := d.reg.Unregister(name); err == nil {
			if err := dev.Close(); err != nil {
				errs = append(errs, fmt.Errorf("close %s: %w", name, err))
			}
		}
	}
	d.closeListeners()
	if d.cfg.NBDSocket != "" {
		os.Remove(d.cfg.NBDSocket)
	}
	if err := d.dirLock.release(); err != nil {
		errs = append(errs, err)
	}
	err := errors.Join(errs...)
	if err != nil {
		d.log.Error("shutdown finished with errors", "err", err)
	} else {
		d.log.Info("shutdown complete")
	}
	return err
}

func (d *Daemon) dataDir() string {
	if d.cfg.Bare {
		return ""
	}
	return d.cfg.DataDir
}

// loadStartupConfig replays the config file, or the data directory's
// persisted state, or creates the embedded default there.
func (d *Daemon) loadStartupConfig(ctx context.Context) error {
	var doc *Document
	var err error
	persisted := filepath.Join(d.cfg.DataDir, ConfigFileName)
	fromDataDir := false // doc is the data directory's persisted config
	switch {
	case d.cfg.ConfigFile != "" && d.cfg.INIFile != "":
		return fmt.Errorf("--config and --ini exclude each other")
	case d.cfg.ConfigFile != "":
		doc, err = ReadDocument(d.cfg.ConfigFile)
	case d.cfg.INIFile != "":
		doc, err = readINI(d.cfg.INIFile)
	case d.cfg.Bare:
		return nil
	default:
		if err := os.MkdirAll(d.cfg.DataDir, dataDirMode); err != nil {
			return fmt.Errorf("data dir: %w", err)
		}
		if _, statErr := os.Stat(persisted); statErr == nil {
			doc, err = ReadDocument(persisted)
			fromDataDir = true
		} else {
			doc, err = d.defaultDocument()
		}
	}
	if err != nil {
		return err
	}
	if err := d.Replay(ctx, doc); err != nil {
		return err
	}
	if fromDataDir {
		d.warnRAMBdevs(doc)
	}
	d.logPersistence()
	if !d.cfg.Bare {
		d.persistMu.Lock()
		d.persist = true
		d.persistMu.Unlock()
		d.saveState()
	}
	return nil
}

// Document returns the daemon's current configuration as it is persisted:
// what save_config would write, plus the OCF vbdevs still waiting for a
// base bdev and the start-up entries that failed, while they apply
// (carry.go; those that no longer do are dropped for good).
func (d *Daemon) Document() (*Document, error) {
	doc := &Document{}
	for _, name := range subsystemOrder {
		entries, err := d.api.PersistentConfig(name)
		if err != nil {
			return nil, err
		}
		b, err := json.Marshal(entries)
		if err != nil {
			return nil, err
		}
		ss := Subsystem{Subsystem: name}
		if err := json.Unmarshal(b, &ss.Config); err != nil {
			return nil, err
		}
		doc.Subsystems = append(doc.Subsystems, ss)
	}
	d.carried.mergeInto(doc, d.bdevExists)
	return doc, nil
}

// bdevExists reports whether a bdev, or an OCF vbdev started or not, is
// called name.
func (d *Daemon) bdevExists(name string) bool {
	if _, err := d.reg.Lookup(name); err == nil {
		return true
	}
	_, err := d.ocf.Get(name)
	return err == nil
}

// saveState persists the configuration in the data directory, atomically.
func (d *Daemon) saveState() {
	d.persistMu.Lock()
	defer d.persistMu.Unlock()
	if !d.persist {
		return
	}
	doc, err := d.Document()
	if err == nil {
		var b []byte
		if b, err = json.MarshalIndent(doc, "", "  "); err == nil {
			err = writeFileAtomic(filepath.Join(d.cfg.DataDir, ConfigFileName), append(b, '\n'))
		}
	}
	d.persistLog.saved(d.log, filepath.Join(d.cfg.DataDir, ConfigFileName), err)
}
