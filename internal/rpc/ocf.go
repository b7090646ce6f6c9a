package rpc

import (
	"context"
	"encoding/json"
	"errors"
	"syscall"

	"blockcache/internal/jsonrpc"
	"blockcache/internal/vbdev"
)

func (a *API) registerOCF() {
	a.srv.Register("bdev_ocf_create", a.mutating(a.ocfCreate))
	a.srv.Register("bdev_ocf_delete", a.mutating(a.ocfDelete))
	a.srv.Register("bdev_ocf_get_bdevs", a.ocfGetBdevs)
	a.srv.Register("bdev_ocf_get_stats", a.ocfGetStats)
	a.srv.Register("bdev_ocf_reset_stats", a.ocfResetStats)
	a.srv.Register("bdev_ocf_set_cache_mode", a.mutating(a.ocfSetCacheMode))
	a.srv.Register("bdev_ocf_set_seqcutoff", a.mutating(a.ocfSetSeqCutoff))
	a.srv.Register("bdev_ocf_flush_start", a.ocfFlushStart)
	a.srv.Register("bdev_ocf_flush_status", a.ocfFlushStatus)
	a.srv.Register("bdev_ocf_flush_cancel", a.ocfFlushCancel)
	a.srv.Register("bdev_ocf_set_fallback_pt", a.mutating(a.ocfSetFallbackPT))
	// blockcache's (ocf_policy.go).
	a.srv.Register("bdev_ocf_set_cleaning", a.mutating(a.ocfSetCleaning))
	a.srv.Register("bdev_ocf_set_promotion", a.mutating(a.ocfSetPromotion))
	a.srv.Register("bdev_ocf_get_policies", a.ocfGetPolicies)
	// The 2020 names, still accepted by SPDK as deprecated aliases.
	a.srv.RegisterAlias("construct_ocf_bdev", "bdev_ocf_create")
	a.srv.RegisterAlias("delete_ocf_bdev", "bdev_ocf_delete")
	a.srv.RegisterAlias("get_ocf_stats", "bdev_ocf_get_stats")
	a.srv.RegisterAlias("get_ocf_bdevs", "bdev_ocf_get_bdevs")
}

// errNoSuchVbdev is every OCF method's answer to an unknown vbdev name.
func errNoSuchVbdev(name string) error {
	return jsonrpc.Errorf(jsonrpc.CodeInvalidParams, "%s", jsonrpc.Strerror(syscall.ENODEV)).WithData("no OCF vbdev named %q", name)
}

// ocfFailure is the -32603 reply of a failed OCF operation: SPDK's message
// with the negative errno, and the full reason as data.
func ocfFailure(prefix string, err error) error {
	return jsonrpc.Errorf(jsonrpc.CodeInternalError, "%s: %d", prefix, -int(errnoOf(err))).WithData("%s", err.Error())
}

type ocfCreateParams struct {
	Name          string `json:"name" rpc:"required"`
	Mode          string `json:"mode" rpc:"required"`
	CacheLineSize uint64 `json:"cache_line_size"`
	CacheBdevName string `json:"cache_bdev_name" rpc:"required"`
	CoreBdevName  string `json:"core_bdev_name" rpc:"required"`
	// Force is blockcache's: reinitialise a cache device that holds another
	// cache or damaged metadata. Never written to configs.
	Force bool `json:"force,omitempty"`
	// VolatileDirtyMetadata is blockcache's: a new cache makes changes of
	// dirty state durable at flush or FUA only (docs/durability.md).
	// Written to configs only when set, so SPDK's shape is kept otherwise.
	VolatileDirtyMetadata bool `json:"volatile_dirty_metadata,omitempty"`
}

// startupKey marks the context of a call that replays the start-up config.
type startupKey struct{}

// AtStartup returns ctx marked as replaying the start-up config. A
// bdev_ocf_create called with it whose start fails still answers the
// error, but keeps the vbdev, failed, with the error as its reason
// (vbdev.Manager.Restore), where at run time nothing would remain of it.
func AtStartup(ctx context.Context) context.Context {
	return context.WithValue(ctx, startupKey{}, true)
}

func atStartup(ctx context.Context) bool {
	v, _ := ctx.Value(startupKey{}).(bool)
	return v
}

func (a *API) ocfCreate(ctx context.Context, params json.RawMessage) (any, error) {
	var p ocfCreateParams
	if err := jsonrpc.DecodeParams(params, &p, errInvalidParams); err != nil {
		return nil, err
	}
	create := a.svc.OCF.Create
	if atStartup(ctx) {
		create = a.svc.OCF.Restore
	}
	_, err := create(vbdev.Params{Name: p.Name, Mode: p.Mode, LineSizeKiB: p.CacheLineSize,
		CacheBdev: p.CacheBdevName, CoreBdev: p.CoreBdevName, Force: p.Force, VolatileDirtyMetadata: p.VolatileDirtyMetadata})
	if err != nil {
		return nil, ocfFailure("Could not create OCF vbdev", err)
	}
	return p.Name, nil
}

type nameParams struct {
	Name string `json:"name" rpc:"required"`
}

func (a *API) ocfDelete(_ context.Context, params json.RawMessage) (any, error) {
	var p nameParams
	if err := jsonrpc.DecodeParams(params, &p, errInvalidParams); err != nil {
		return nil, err
	}
	done := a.deleting(p.Name)
	err := a.svc.OCF.Delete(p.Name)
	done(err == nil)
	if err != nil {
		if errors.Is(err, vbdev.ErrNoSuchVbdev) {
			return nil, errNoSuchVbdev(p.Name)
		}
		return nil, ocfFailure("Could not delete OCF vbdev", err)
	}
	return true, nil
}

type ocfBaseObject struct {
	Name     string `json:"name"`
	Attached bool   `json:"attached"`
}

type ocfBdevObject struct {
	Name    string        `json:"name"`
	Started bool          `json:"started"`
	Cache   ocfBaseObject `json:"cache"`
	Core    ocfBaseObject `json:"core"`
	// FallbackPT is blockcache's: the cache serves pass-through after too
	// many cache-device errors.
	FallbackPT bool `json:"fallback_pt"`
	// Failed and Error are blockcache's: the vbdev's start failed (a
	// damaged cache at start-up, say) and why; it stays, holding no bdev,
	// until deleted or retried (docs/lifecycle.md).
	Failed bool   `json:"failed"`
	Error  string `json:"error,omitempty"`
	// VolatileDirtyMetadata is blockcache's: the cache's changes of dirty
	// state are durable at flush or FUA only (as requested, when not
	// started).
	VolatileDirtyMetadata bool `json:"volatile_dirty_metadata"`
}

type optionalNameParams struct {
	Name string `json:"name"`
}

func (a *API) ocfGetBdevs(_ context.Context, params json.RawMessage) (any, error) {
	var p optionalNameParams
	if err := jsonrpc.DecodeParams(params, &p, errInvalidParams); err != nil {
		return nil, err
	}
	list := a.svc.OCF.List(p.Name)
	if p.Name != "" && len(list) == 0 {
		return nil, errNoSuchVbdev(p.Name)
	}
	out := make([]ocfBdevObject, 0, len(list))
	for _, in := range list {
		o := ocfBdevObject{
			Name:       in.Name,
			Started:    in.Started,
			Cache:      ocfBaseObject{Name: in.CacheBdev, Attached: in.CacheAttached},
			Core:       ocfBaseObject{Name: in.CoreBdev, Attached: in.CoreAttached},
			FallbackPT: in.FallbackPT,
			Failed:     in.State == vbdev.StateFailed,

			VolatileDirtyMetadata: in.VolatileDirtyMetadata,
		}
		if in.Err != nil {
			o.Error = in.Err.Error()
		}
		out = append(out, o)
	}
	return out, nil
}

func (a *API) ocfGetStats(_ context.Context, params json.RawMessage) (any, error) {
	var p nameParams
	if err := jsonrpc.DecodeParams(params, &p, errInvalidParams); err != nil {
		return nil, err
	}
	s, err := a.svc.OCF.Stats(p.Name)
	switch {
	case errors.Is(err, vbdev.ErrNoSuchVbdev):
		return nil, errNoSuchVbdev(p.Name)
	case err != nil:
		return nil, jsonrpc.Errorf(jsonrpc.CodeInternalError, "Could not get stats: %s", err)
	}
	return statsObject(s), nil
}

func (a *API) ocfResetStats(_ context.Context, params json.RawMessage) (any, error) {
	var p nameParams
	if err := jsonrpc.DecodeParams(params, &p, errInvalidParams); err != nil {
		return nil, err
	}
	err := a.svc.OCF.ResetStats(p.Name)
	switch {
	case errors.Is(err, vbdev.ErrNoSuchVbdev):
		return nil, errNoSuchVbdev(p.Name)
	case err != nil:
		return nil, jsonrpc.Errorf(jsonrpc.CodeInternalError, "Could not reset stats: %s", err)
	}
	return true, nil
}

type setCacheModeParams struct {
	Name string `json:"name" rpc:"required"`
	Mode string `json:"mode" rpc:"required"`
}

func (a *API) ocfSetCacheMode(_ context.Context, params json.RawMessage) (any, error) {
	var p setCacheModeParams
	if err := jsonrpc.DecodeParams(params, &p, errInvalidParams); err != nil {
		return nil, err
	}
	m, err := a.svc.OCF.SetMode(p.Name, p.Mode)
	switch {
	case errors.Is(err, vbdev.ErrNoSuchVbdev):
		return nil, errNoSuchVbdev(p.Name)
	case err != nil:
		return nil, ocfFailure("Could not change OCF vbdev cache mode", err)
	}
	return m.String(), nil
}

// ocfDriverSpecific is the driver_specific object of a started OCF vbdev,
// or nil if name is not one.
func (a *API) ocfDriverSpecific(name string) any {
	in, err := a.svc.OCF.Get(name)
	if err != nil || !in.Started {
		return nil
	}
	return struct {
		CacheDevice      string `json:"cache_device"`
		CoreDevice       string `json:"core_device"`
		Mode             string `json:"mode"`
		CacheLineSize    uint64 `json:"cache_line_size"`
		MetadataVolatile bool   `json:"metadata_volatile"`
		// blockcache's, after SPDK's keys.
		FallbackPT            bool   `json:"fallback_pt"`
		FallbackPTThreshold   uint32 `json:"fallback_pt_threshold"`
		VolatileDirtyMetadata bool   `json:"volatile_dirty_metadata"`
	}{in.CacheBdev, in.CoreBdev, in.Mode, in.LineSizeKiB, in.MetadataVolatile, in.FallbackPT, in.FallbackPTThreshold, in.VolatileDirtyMetadata}
}

// ocfConfig returns the bdev_ocf_create entries of the started and the
// failed vbdevs, in creation order, and with withWaiting those of the
// vbdevs waiting for a base bdev too (failed and waiting ones with the mode
// and line size they were created with). A failed vbdev is a volume whose
// cache could not be loaded: dropping it from a saved config would lose
// its definition. So is one waiting for a core bdev that was hot-removed
// (its cache holds the core's data).
// After each started vbdev's entry come the entries restoring its policies
// where they differ from the defaults (policyConfig); the cache's cleaning
// and promotion after its first started vbdev only.
func (a *API) ocfConfig(withWaiting bool) []configItem {
	started := map[string]vbdev.Params{}
	for _, p := range a.svc.OCF.CreateParams() {
		started[p.Name] = p
	}
	var out []configItem
	cacheDone := map[string]bool{}
	for _, in := range a.svc.OCF.List("") {
		p, ok := started[in.Name]
		if !ok {
			if !withWaiting && in.State != vbdev.StateFailed && !in.CoreRemoved {
				continue
			}
			p = vbdev.Params{Name: in.Name, Mode: in.Mode, LineSizeKiB: in.LineSizeKiB, CacheBdev: in.CacheBdev, CoreBdev: in.CoreBdev,
				VolatileDirtyMetadata: in.VolatileDirtyMetadata}
		}
		out = append(out, configItem{name: p.Name, deps: []string{p.CacheBdev, p.CoreBdev},
			entry: configEntry{Method: "bdev_ocf_create", Params: ocfCreateParams{
				Name: p.Name, Mode: p.Mode, CacheLineSize: p.LineSizeKiB, CacheBdevName: p.CacheBdev, CoreBdevName: p.CoreBdev,
				VolatileDirtyMetadata: p.VolatileDirtyMetadata,
			}}})
		if ok {
			out = append(out, a.policyConfig(p.Name, !cacheDone[p.CacheBdev])...)
			cacheDone[p.CacheBdev] = true
		}
	}
	return out
}

type setFallbackPTParams struct {
	Name      string `json:"name" rpc:"required"`
	Threshold uint32 `json:"threshold" rpc:"required"`
}

// ocfSetFallbackPT is blockcache's: set the cache-error threshold of
// fallback pass-through (0 off, at most 1000000).
func (a *API) ocfSetFallbackPT(_ context.Context, params json.RawMessage) (any, error) {
	var p setFallbackPTParams
	if err := jsonrpc.DecodeParams(params, &p, errInvalidParams); err != nil {
		return nil, err
	}
	err := a.svc.OCF.SetFallbackPT(p.Name, p.Threshold)
	switch {
	case errors.Is(err, vbdev.ErrNoSuchVbdev):
		return nil, errNoSuchVbdev(p.Name)
	case errors.Is(err, vbdev.ErrInvalidParam):
		return nil, jsonrpc.Errorf(jsonrpc.CodeInvalidParams, "threshold %d out of range (allowed 0..1000000)", p.Threshold).WithData("%v", err)
	case err != nil:
		return nil, ocfFailure("Could not set fallback pass-through threshold", err)
	}
	return true, nil
}
