package rpc

import (
	"context"
	"encoding/json"

	"blockcache/internal/jsonrpc"
	"blockcache/internal/metrics"
)

// blockcache_get_metrics (ours): the numbers /metrics serves, as JSON, for
// tools that do not speak Prometheus (blockcache top). Counters never go
// down: bdev_ocf_reset_stats does not reset them.

type getMetricsParams struct {
	// Name, if set, keeps only the OCF volume of that name (and no NBD
	// export but the one of that name).
	Name string `json:"name,omitempty"`
}

func (a *API) registerMetrics() {
	a.srv.Register("blockcache_get_metrics", a.getMetrics)
}

func (a *API) getMetrics(_ context.Context, params json.RawMessage) (any, error) {
	var p getMetricsParams
	if err := jsonrpc.DecodeParams(params, &p, errInvalidParams); err != nil {
		return nil, err
	}
	s := metrics.Source{OCF: a.svc.OCF, NBD: a.svc.NBD}.Gather()
	if p.Name == "" {
		return s, nil
	}
	vols, exports := s.Volumes[:0], s.Exports[:0]
	for _, v := range s.Volumes {
		if v.Name == p.Name {
			vols = append(vols, v)
		}
	}
	for _, e := range s.Exports {
		if e.Name == p.Name {
			exports = append(exports, e)
		}
	}
	if len(vols) == 0 {
		return nil, errNoSuchVbdev(p.Name)
	}
	s.Volumes, s.Exports = vols, exports
	return s, nil
}
