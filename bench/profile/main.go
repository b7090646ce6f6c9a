// Command profile runs the blockcache daemon in-process, exactly as
// `blockcache serve --bare --config FILE` does, with net/http/pprof served on
// a loopback address, so the NBD data path can be profiled under a real
// client (fio):
//
//	go run ./bench/profile --config cfg.json --nbd-listen 127.0.0.1:10911 --pprof 127.0.0.1:6060 &
//	fio --ioengine=nbd --uri=nbd://127.0.0.1:10911/Cache0 ... &
//	go tool pprof -top http://127.0.0.1:6060/debug/pprof/profile?seconds=5
//
// bench/nbd.sh uses it when PROFILE=1. It is a benchmark tool, not part of
// the product.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	_ "net/http/pprof"
	"os"
	"os/signal"
	"runtime"
	"syscall"

	"blockcache/internal/daemon"
)

func main() {
	var cfg daemon.Config
	pprofAddr := flag.String("pprof", "127.0.0.1:6060", "net/http/pprof listen address")
	mutexFrac := flag.Int("mutex-fraction", 0, "runtime.SetMutexProfileFraction (0: off)")
	blockRate := flag.Int("block-rate", 0, "runtime.SetBlockProfileRate in ns (0: off)")
	flag.StringVar(&cfg.ConfigFile, "config", "", "SPDK JSON config to replay")
	flag.StringVar(&cfg.RPCSocket, "r", "/tmp/blockcache-profile.sock", "JSON-RPC Unix socket")
	flag.StringVar(&cfg.NBDListen, "nbd-listen", "127.0.0.1:10809", "NBD TCP listen address")
	flag.Parse()
	cfg.Bare = true
	cfg.Log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	runtime.SetMutexProfileFraction(*mutexFrac)
	runtime.SetBlockProfileRate(*blockRate)

	go func() {
		if err := http.ListenAndServe(*pprofAddr, nil); err != nil {
			fmt.Fprintln(os.Stderr, "pprof:", err)
			os.Exit(1)
		}
	}()
	d, err := daemon.New(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := d.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
