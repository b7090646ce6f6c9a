package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"blockcache/internal/metrics"
)

// metricsServer serves /metrics for Prometheus on Config.MetricsListen.
type metricsServer struct {
	l   net.Listener
	srv *http.Server
}

// listenMetrics opens the metrics listener, or does nothing when addr is
// empty (metrics are off by default).
func (d *Daemon) listenMetrics(addr string) error {
	if addr == "" {
		return nil
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("metrics listen %s: %w", addr, err)
	}
	h := metrics.Handler(metrics.Source{OCF: d.ocf, NBD: d.nbd})
	d.metrics = &metricsServer{l: l, srv: &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}}
	d.log.Info("metrics listening", "url", "http://"+l.Addr().String()+"/metrics")
	return nil
}

// MetricsAddr returns the metrics listener's address, or nil.
func (d *Daemon) MetricsAddr() net.Addr {
	if d.metrics == nil {
		return nil
	}
	return d.metrics.l.Addr()
}

// serve serves until shutdown; it reports only a failure.
func (m *metricsServer) serve() error {
	if err := m.srv.Serve(m.l); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("metrics server: %w", err)
	}
	return nil
}

// shutdown stops the server, letting a scrape in progress finish.
func (m *metricsServer) shutdown() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if m.srv.Shutdown(ctx) != nil {
		m.srv.Close()
	}
}
