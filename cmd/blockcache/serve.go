package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"sort"
	"syscall"

	"github.com/spf13/cobra"

	"blockcache/internal/cpumask"
	"blockcache/internal/daemon"
	"blockcache/internal/nbd"
)

// DefaultRPCSocket is where the daemon listens for JSON-RPC, as SPDK's
// /var/tmp/spdk.sock.
const DefaultRPCSocket = "/var/tmp/blockcache.sock"

func newServeCmd() *cobra.Command {
	cfg := daemon.Config{}
	var logLevel, mask string
	var sec *securityFlags
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the daemon",
		Long: `Run the blockcache daemon: JSON-RPC on a Unix socket, NBD exports over TCP
and/or a Unix socket.

With no flags it creates (first run) or reopens (later runs) ./blockcache-data/
holding a 256 MiB cache file and a 2 GiB core file, a write-through cached
volume "cache0" on them, exported over NBD. Every successful management RPC
is persisted there, so a restart brings back the same bdevs, caches and
exports. --config FILE starts from an SPDK JSON config instead; --bare starts
empty and persists nothing, like an SPDK target.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			level := slog.LevelInfo
			if err := level.UnmarshalText([]byte(logLevel)); err != nil {
				return fmt.Errorf("--log-level: %w", err)
			}
			cfg.Log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
			if mask != "" {
				set, err := cpumask.Parse(mask)
				if err != nil {
					return fmt.Errorf("-m/--cpumask: %w", err)
				}
				if err := cpumask.Pin(set); err != nil {
					return fmt.Errorf("-m/--cpumask %s: %w", mask, err)
				}
				cfg.Log.Info("pinned", "cpus", cpumask.String(set), "gomaxprocs", set.Count())
			} else if os.Getenv("GOMAXPROCS") == "" {
				n := cpumask.DefaultProcs(runtime.GOMAXPROCS(0))
				runtime.GOMAXPROCS(n)
				cfg.Log.Debug("scheduler slots", "gomaxprocs", n)
			}
			if err := checkNBDFlags(cfg.NBD); err != nil {
				return err
			}
			if cfg.IOPoll < 0 {
				return fmt.Errorf("--io-poll %v: must not be negative", cfg.IOPoll)
			}
			if err := sec.apply(&cfg); err != nil {
				return err
			}
			cfg.Version = version
			out := cmd.OutOrStdout()
			cfg.OnReady = func(d *daemon.Daemon) { printHowToReach(out, d) }
			d, err := daemon.New(cfg)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			return d.Run(ctx)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&cfg.RPCSocket, "rpc-socket", "r", DefaultRPCSocket, "JSON-RPC Unix socket path (SPDK's -r)")
	f.StringVarP(&cfg.ConfigFile, "config", "c", "", "SPDK JSON config to replay at every start instead of the data directory's state (never written; changes persist to the data directory unless --bare)")
	f.StringVar(&cfg.INIFile, "ini", "", "legacy SPDK INI config ([Malloc], [AIO], [OCF] sections) to replay at start")
	f.StringVar(&cfg.DataDir, "data-dir", "blockcache-data", "directory for persisted state and the embedded default's images")
	f.StringVar(&cfg.NBDListen, "nbd-listen", "127.0.0.1:10809", "NBD TCP listen address (empty for none)")
	f.StringVar(&cfg.NBDSocket, "nbd-socket", "", "NBD Unix socket path (empty for none)")
	f.IntVar(&cfg.NBD.MaxConnections, "nbd-max-connections", nbd.DefaultMaxConnections, "NBD connections open at once, all listeners together; more are closed at once")
	f.DurationVar(&cfg.NBD.HandshakeTimeout, "nbd-handshake-timeout", nbd.DefaultHandshakeTimeout, "disconnect an NBD client that has not finished negotiating after this long")
	f.DurationVar(&cfg.NBD.PayloadTimeout, "nbd-payload-timeout", nbd.DefaultPayloadTimeout, "disconnect an NBD client whose WRITE payload has not arrived after this long")
	f.Int64Var(&cfg.NBD.MaxInflightBytes, "nbd-max-inflight-bytes", nbd.DefaultMaxInflightBytes, "payload bytes held by NBD requests of all connections together; a request beyond it waits")
	sec = addSecurityFlags(f)
	f.StringVar(&cfg.MetricsListen, "metrics-listen", "", "serve Prometheus metrics at http://ADDR/metrics, e.g. 127.0.0.1:9559 (empty: off); see docs/monitoring.md")
	f.BoolVar(&cfg.Bare, "bare", false, "start with no bdevs and persist nothing, like an SPDK target")
	f.DurationVar(&cfg.IOPoll, "io-poll", 0, "io_uring bdevs poll for their completions for up to this long (e.g. 1ms) while IO is in flight instead of sleeping: lower latency for a busy CPU; 0 never polls (see docs/perf.md)")
	f.BoolVar(&cfg.ShutdownFlush, "shutdown-flush", true, "write dirty data back to the cores at shutdown (false: keep it in the caches for a fast restart)")
	f.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn, error")
	f.StringVarP(&mask, "cpumask", "m", "", "run on these CPUs only (SPDK's -m: a hex mask like 0x3 or a list like [0,2-3]), with one Go scheduler slot each; default: all CPUs, with scheduler slots for half of them (GOMAXPROCS in the environment overrides)")
	return cmd
}

// checkNBDFlags refuses NBD bounds out of range, naming the flag (zero
// would mean nbd's default, which is not what a user asking for 0 meant).
func checkNBDFlags(o nbd.Options) error {
	switch {
	case o.MaxConnections < 1:
		return fmt.Errorf("--nbd-max-connections %d: must be at least 1", o.MaxConnections)
	case o.HandshakeTimeout <= 0:
		return fmt.Errorf("--nbd-handshake-timeout %v: must be positive", o.HandshakeTimeout)
	case o.PayloadTimeout <= 0:
		return fmt.Errorf("--nbd-payload-timeout %v: must be positive", o.PayloadTimeout)
	case o.MaxInflightBytes < nbd.MaxRequestBytes:
		return fmt.Errorf("--nbd-max-inflight-bytes %d: must be at least %d, the largest NBD request", o.MaxInflightBytes, nbd.MaxRequestBytes)
	}
	return nil
}

// printHowToReach tells the user how to reach each export.
func printHowToReach(w io.Writer, d *daemon.Daemon) {
	exports := d.Exports()
	names := make([]string, 0, len(exports))
	for n := range exports {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		uri := exports[n]
		fmt.Fprintf(w, "export %s: %s\n", n, uri)
		fmt.Fprintf(w, "  nbdinfo %s\n  qemu-img info %s\n", uri, uri)
		if a := d.NBDAddr(); a != nil {
			host, port := splitHostPort(a.String())
			fmt.Fprintf(w, "  nbd-client %s %s /dev/nbd0 -N %s\n", host, port, n)
		}
	}
}
