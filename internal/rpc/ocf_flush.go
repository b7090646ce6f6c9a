package rpc

import (
	"context"
	"encoding/json"
	"errors"
	"math"

	"blockcache/internal/jsonrpc"
	"blockcache/internal/vbdev"
)

// flushStartParams are bdev_ocf_flush_start's: SPDK's name, and ours,
// write_through (absent or false: SPDK's flush).
type flushStartParams struct {
	Name         string `json:"name" rpc:"required"`
	WriteThrough bool   `json:"write_through"`
}

func (a *API) ocfFlushStart(_ context.Context, params json.RawMessage) (any, error) {
	var p flushStartParams
	if err := jsonrpc.DecodeParams(params, &p, errInvalidParams); err != nil {
		return nil, err
	}
	err := a.svc.OCF.FlushStart(p.Name, p.WriteThrough)
	switch {
	case errors.Is(err, vbdev.ErrNoSuchVbdev):
		return nil, errNoSuchVbdev(p.Name)
	case errors.Is(err, vbdev.ErrNotStarted):
		return nil, jsonrpc.Errorf(jsonrpc.CodeInvalidParams, "Couldn't flush cache: device not attached").WithData("%v", err)
	case err != nil:
		return nil, ocfFailure("Could not lock cache", err)
	}
	return true, nil
}

// ocfFlushCancel is blockcache's bdev_ocf_flush_cancel: it cancels the
// running flush of name and answers once it has stopped (after the batch
// it is writing back), true if one was running, false otherwise.
func (a *API) ocfFlushCancel(ctx context.Context, params json.RawMessage) (any, error) {
	var p nameParams
	if err := jsonrpc.DecodeParams(params, &p, errInvalidParams); err != nil {
		return nil, err
	}
	ok, err := a.svc.OCF.FlushCancel(ctx, p.Name)
	switch {
	case errors.Is(err, vbdev.ErrNoSuchVbdev):
		return nil, errNoSuchVbdev(p.Name)
	case ok:
		// Cancelled; err only says the wait for its last batch was cut
		// short (the daemon is stopping), which changes nothing.
		return true, nil
	case err != nil:
		return nil, ocfFailure("Could not cancel flush", err)
	}
	return false, nil
}

// flushStatusObject is bdev_ocf_flush_status' result: SPDK's in_progress
// and, once finished, status (0 or a negative errno, -125 when cancelled);
// blockcache adds how many lines the flush has written back of how many,
// the bytes it has still to write back (whole lines), its rate in bytes
// per second (over the last 5 s while it runs, its average once finished)
// and whether it holds the volume write-through.
type flushStatusObject struct {
	InProgress      bool   `json:"in_progress"`
	Status          *int32 `json:"status,omitempty"`
	FlushedLines    int    `json:"flushed_lines"`
	TotalLines      int    `json:"total_lines"`
	RemainingBytes  int64  `json:"remaining_bytes"`
	RateBytesPerSec int64  `json:"rate_bytes_per_sec"`
	WriteThrough    bool   `json:"write_through"`
}

func (a *API) ocfFlushStatus(_ context.Context, params json.RawMessage) (any, error) {
	var p nameParams
	if err := jsonrpc.DecodeParams(params, &p, errInvalidParams); err != nil {
		return nil, err
	}
	st, err := a.svc.OCF.FlushStatus(p.Name)
	if err != nil {
		return nil, errNoSuchVbdev(p.Name)
	}
	out := flushStatusObject{InProgress: st.InProgress, FlushedLines: st.Done, TotalLines: st.Total,
		RemainingBytes: st.RemainingBytes, RateBytesPerSec: int64(math.Round(st.BytesPerSec)), WriteThrough: st.WriteThrough}
	if !st.InProgress {
		var status int32
		if st.Err != nil {
			status = -int32(errnoOf(st.Err))
		}
		out.Status = &status
	}
	return out, nil
}
