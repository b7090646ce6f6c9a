package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"blockcache/internal/bdev"
	"blockcache/internal/daemon"
	"blockcache/internal/jsonrpc"
	"blockcache/internal/nbd"
	"blockcache/internal/rpc"
	"blockcache/internal/vbdev"
)

// perfClaimOwner is the claim perf holds on the bdevs it drives.
const perfClaimOwner = "perf"

// perfBdevs are the bdevs of an SPDK JSON config, built in this process
// by the daemon's own method handlers (internal/rpc), so that each is made
// exactly as `serve --config` makes it, with no daemon and no socket.
type perfBdevs struct {
	reg    *bdev.Registry
	ocf    *vbdev.Manager
	claims []*bdev.Claim
}

// buildPerfBdevs replays the bdev subsystem of the config at path, entry
// by entry, in order. Unlike serve, which logs a failed entry and goes on,
// it stops at the first failure: a benchmark of half a config measures
// something else. Other subsystems (nbd) are skipped, said on warn. A
// cache volume of the config still waiting for a base bdev afterwards is an
// error too; one the config did not ask for (found on a cache device whose
// metadata names it, as SPDK's examine does) is left out, said on warn.
// ioPoll is the io_uring bdevs' completion poll budget (rpc.Services.IOPoll).
func buildPerfBdevs(ctx context.Context, path string, ioPoll time.Duration, log *slog.Logger, warn io.Writer) (*perfBdevs, error) {
	doc, err := daemon.ReadDocument(path)
	if err != nil {
		return nil, err
	}
	nbdServer, err := nbd.NewServer(log, nbd.Options{})
	if err != nil {
		return nil, err
	}
	p := &perfBdevs{reg: bdev.NewRegistry()}
	p.ocf = vbdev.NewManager(p.reg, log)
	srv := jsonrpc.NewServer(jsonrpc.Options{Logger: log})
	srv.SetState(jsonrpc.StateRuntime)
	rpc.Register(srv, rpc.Services{
		Registry: p.reg,
		OCF:      p.ocf,
		NBD:      nbdServer,
		NBDURI:   func(string) string { return "" },
		Log:      log,
		Version:  version,
		IOPoll:   ioPoll,
	})
	created := map[string]bool{} // the names of the config's cache volumes
	for _, ss := range doc.Subsystems {
		if ss.Subsystem != "bdev" {
			if len(ss.Config) > 0 {
				fmt.Fprintf(warn, "blockcache perf: config %s: subsystem %s skipped (%d entries): perf builds bdevs only\n", path, ss.Subsystem, len(ss.Config))
			}
			continue
		}
		for i, m := range ss.Config {
			if _, err := srv.Call(ctx, m.Method, m.Params); err != nil {
				p.close()
				return nil, fmt.Errorf("config %s: subsystem bdev entry %d (%s): %w", path, i, m.Method, err)
			}
			if m.Method == "bdev_ocf_create" {
				var named struct{ Name string }
				if json.Unmarshal(m.Params, &named) == nil {
					created[named.Name] = true
				}
			}
		}
	}
	for _, in := range p.ocf.List("") {
		if in.State == vbdev.StateStarted {
			continue
		}
		why := fmt.Sprintf("failed to start: %v", in.Err)
		if in.State != vbdev.StateFailed {
			base := in.CoreBdev
			if !in.CacheAttached {
				base = in.CacheBdev
			}
			why = fmt.Sprintf("is waiting for bdev %q, which the config does not create", base)
		}
		if !created[in.Name] {
			fmt.Fprintf(warn, "blockcache perf: config %s: OCF vbdev %q, found on its cache device, %s; not measured\n", path, in.Name, why)
			continue
		}
		p.close()
		return nil, fmt.Errorf("config %s: OCF vbdev %q %s", path, in.Name, why)
	}
	return p, nil
}

// targets returns the bdevs to drive, each claimed for perf: the one named
// (-T), or every bdev no other holds (a cache volume's cache and core are
// its own), as bdevperf takes every leaf bdev.
func (p *perfBdevs) targets(name string) ([]bdev.Device, error) {
	var devs []bdev.Device
	if name != "" {
		d, err := p.reg.Lookup(name)
		if err != nil {
			return nil, fmt.Errorf("-T %s: %w", name, err)
		}
		devs = []bdev.Device{d}
	} else {
		for _, d := range p.reg.List() {
			if _, claimed := p.reg.ClaimOwner(d.Info().Name); !claimed {
				devs = append(devs, d)
			}
		}
		if len(devs) == 0 {
			return nil, errors.New("the config creates no bdev that is free to drive")
		}
	}
	for _, d := range devs {
		c, err := p.reg.Claim(d.Info().Name, perfClaimOwner, nil)
		if err != nil {
			return nil, fmt.Errorf("-T %s: %w", d.Info().Name, err)
		}
		p.claims = append(p.claims, c)
	}
	return devs, nil
}

// close stops the cache volumes (their dirty data stays in the caches, as
// with serve --shutdown-flush=false) and closes every bdev.
func (p *perfBdevs) close() error {
	for _, c := range p.claims {
		c.Release()
	}
	errs := []error{p.ocf.Shutdown(false)}
	p.ocf.Close()
	for _, d := range p.reg.List() {
		name := d.Info().Name
		if d, err := p.reg.Unregister(name); err == nil {
			if err := d.Close(); err != nil {
				errs = append(errs, fmt.Errorf("close %s: %w", name, err))
			}
		}
	}
	return errors.Join(errs...)
}
