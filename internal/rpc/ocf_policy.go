package rpc

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"syscall"
	"time"

	"blockcache/internal/jsonrpc"
	"blockcache/internal/ocf"
	"blockcache/internal/vbdev"
)

// Cache policies of an OCF vbdev: SPDK's bdev_ocf_set_seqcutoff, and
// blockcache's bdev_ocf_set_cleaning, bdev_ocf_set_promotion and
// bdev_ocf_get_policies. Cleaning and promotion belong to the cache (every
// vbdev on it shares them), sequential cutoff to the vbdev's core.

const seqCutoffFailure = "OCF could not set sequential cutoff parameters"

// wireParam is how the set methods name an engine parameter, and the
// engine units in one wire unit where they differ.
type wireParam struct {
	name    string
	perUnit int64  // engine units per wire unit; 0: the same unit
	unit    string // the wire unit, with perUnit
}

// wireParams maps the engine's policy parameters (ocf.ParamError's Policy
// and Param) to the parameters of bdev_ocf_set_cleaning,
// bdev_ocf_set_promotion and bdev_ocf_set_seqcutoff. The policies
// themselves are parsed here, so a bad one never reaches the engine.
var wireParams = map[[2]string]wireParam{
	{"cleaning alru", "wake_up"}:              {name: "alru_wake_up"},
	{"cleaning alru", "staleness_time"}:       {name: "alru_staleness_time"},
	{"cleaning alru", "flush_max_buffers"}:    {name: "alru_flush_max_buffers"},
	{"cleaning alru", "activity_threshold"}:   {name: "alru_activity_threshold"},
	{"cleaning alru", "max_dirty_ratio"}:      {name: "alru_max_dirty_ratio"},
	{"cleaning acp", "wake_up"}:               {name: "acp_wake_up"},
	{"cleaning acp", "flush_max_buffers"}:     {name: "acp_flush_max_buffers"},
	{"cleaning", "max_inflight"}:              {name: "max_inflight"},
	{"promotion nhit", "insertion_threshold"}: {name: "insertion_threshold"},
	{"promotion nhit", "trigger_threshold"}:   {name: "trigger_threshold"},
	{"sequential cutoff", "threshold"}:        {name: "threshold", perUnit: 1024, unit: "KiB"},
	{"sequential cutoff", "promotion_count"}:  {name: "promotion_count"},
}

// paramMessage says what is wrong with a parameter as the set methods name
// it, in their units, e.g. "alru_wake_up 3601 s out of range (allowed
// 0..3600 s)".
func paramMessage(pe *ocf.ParamError) string {
	w, ok := wireParams[[2]string{pe.Policy, pe.Param}]
	if !ok {
		return pe.Error()
	}
	e := *pe
	if w.perUnit != 0 {
		up := func(v int64) int64 { return (v + w.perUnit - 1) / w.perUnit }
		e.Value, e.Min, e.Max, e.Unit = up(e.Value), up(e.Min), up(e.Max), w.unit
	}
	return e.Describe(w.name)
}

// policyFailure is the reply to a policy change the vbdev manager refused:
// -32602 naming a parameter out of range, or as ocfFailure (the vbdev has
// not started, -19; its metadata could not be written, -5).
func policyFailure(name, prefix string, err error) error {
	var pe *ocf.ParamError
	switch {
	case errors.As(err, &pe):
		return jsonrpc.Errorf(jsonrpc.CodeInvalidParams, "%s", paramMessage(pe)).WithData("%s", err.Error())
	case errors.Is(err, vbdev.ErrNoSuchVbdev):
		return errNoSuchVbdev(name)
	}
	return ocfFailure(prefix, err)
}

type setSeqCutoffParams struct {
	Name   string `json:"name" rpc:"required"`
	Policy string `json:"policy" rpc:"required"`
	// Threshold is in KiB; 0 (or absent) leaves it unchanged.
	Threshold uint32 `json:"threshold,omitempty"`
	// PromotionCount: 0 (or absent) leaves it unchanged.
	PromotionCount uint32 `json:"promotion_count,omitempty"`
}

// seqCutoffInvalid is SPDK's reply to a bad sequential cutoff parameter,
// with data saying which one and what it may be.
func seqCutoffInvalid(format string, args ...any) error {
	return jsonrpc.Errorf(jsonrpc.CodeInternalError, "%s: %d", seqCutoffFailure, -int(syscall.EINVAL)).WithData(format, args...)
}

// thresholdKiB is the engine's threshold in bytes as the wire gives it, in
// KiB, rounded up.
func thresholdKiB(bytes uint64) uint32 {
	return uint32(min((bytes+1023)/1024, math.MaxUint32))
}

// ocfSetSeqCutoff is SPDK's: set a vbdev's sequential cutoff policy and,
// where given and not 0, its threshold and promotion count.
func (a *API) ocfSetSeqCutoff(_ context.Context, params json.RawMessage) (any, error) {
	var p setSeqCutoffParams
	if err := jsonrpc.DecodeParams(params, &p, errInvalidParams); err != nil {
		return nil, err
	}
	if _, err := a.svc.OCF.Get(p.Name); err != nil {
		return nil, errNoSuchVbdev(p.Name)
	}
	policy, err := ocf.ParseSeqCutoffPolicy(p.Policy)
	if err != nil {
		return nil, seqCutoffInvalid("policy: %v", err)
	}
	err = a.svc.OCF.SetSeqCutoff(p.Name, func(s *ocf.SeqCutoffParams) {
		s.Policy = policy
		if p.Threshold != 0 {
			s.ThresholdBytes = uint64(p.Threshold) * 1024
		}
		if p.PromotionCount != 0 {
			s.PromotionCount = p.PromotionCount
		}
	})
	var pe *ocf.ParamError
	switch {
	case errors.As(err, &pe):
		return nil, seqCutoffInvalid("%s", paramMessage(pe))
	case err != nil:
		return nil, policyFailure(p.Name, seqCutoffFailure, err)
	}
	return true, nil
}

type setCleaningParams struct {
	Name   string `json:"name" rpc:"required"`
	Policy string `json:"policy" rpc:"required"`
	// Optional; absent leaves the parameter unchanged.
	ALRUWakeUp            *uint32 `json:"alru_wake_up,omitempty"`            // s
	ALRUStalenessTime     *uint32 `json:"alru_staleness_time,omitempty"`     // s
	ALRUFlushMaxBuffers   *uint32 `json:"alru_flush_max_buffers,omitempty"`  // lines
	ALRUActivityThreshold *uint32 `json:"alru_activity_threshold,omitempty"` // ms
	ACPWakeUp             *uint32 `json:"acp_wake_up,omitempty"`             // ms
	ACPFlushMaxBuffers    *uint32 `json:"acp_flush_max_buffers,omitempty"`   // lines
	ALRUMaxDirtyRatio     *uint32 `json:"alru_max_dirty_ratio,omitempty"`    // percent; SPDK's newer name
	MaxInflight           *uint32 `json:"max_inflight,omitempty"`            // lines; ours
}

func setDuration(d *time.Duration, v *uint32, unit time.Duration) {
	if v != nil {
		*d = time.Duration(*v) * unit
	}
}

func setUint32(d *uint32, v *uint32) {
	if v != nil {
		*d = *v
	}
}

// ocfSetCleaning is blockcache's: set the cleaning policy of the cache a
// vbdev runs on, and any of its parameters.
func (a *API) ocfSetCleaning(_ context.Context, params json.RawMessage) (any, error) {
	var p setCleaningParams
	if err := jsonrpc.DecodeParams(params, &p, errInvalidParams); err != nil {
		return nil, err
	}
	if _, err := a.svc.OCF.Get(p.Name); err != nil {
		return nil, errNoSuchVbdev(p.Name)
	}
	kind, err := ocf.ParseCleaningKind(p.Policy)
	if err != nil {
		return nil, invalidPolicyParam(err)
	}
	err = a.svc.OCF.SetCleaning(p.Name, func(c *ocf.CleaningParams) {
		c.Kind = kind
		setDuration(&c.ALRU.WakeUp, p.ALRUWakeUp, time.Second)
		setDuration(&c.ALRU.StalenessTime, p.ALRUStalenessTime, time.Second)
		setUint32(&c.ALRU.FlushMaxBuffers, p.ALRUFlushMaxBuffers)
		setDuration(&c.ALRU.ActivityThreshold, p.ALRUActivityThreshold, time.Millisecond)
		setDuration(&c.ACP.WakeUp, p.ACPWakeUp, time.Millisecond)
		setUint32(&c.ACP.FlushMaxBuffers, p.ACPFlushMaxBuffers)
		setUint32(&c.ALRU.MaxDirtyRatio, p.ALRUMaxDirtyRatio)
		setUint32(&c.MaxInflight, p.MaxInflight)
	})
	if err != nil {
		return nil, policyFailure(p.Name, "Could not set cleaning policy", err)
	}
	return true, nil
}

// invalidPolicyParam is blockcache's reply to an unknown policy name.
func invalidPolicyParam(err error) error {
	return jsonrpc.Errorf(jsonrpc.CodeInvalidParams, "%s", err.Error())
}

type setPromotionParams struct {
	Name   string `json:"name" rpc:"required"`
	Policy string `json:"policy" rpc:"required"`
	// Optional; absent leaves the parameter unchanged.
	InsertionThreshold *uint32 `json:"insertion_threshold,omitempty"`
	TriggerThreshold   *uint32 `json:"trigger_threshold,omitempty"` // percent
}

// ocfSetPromotion is blockcache's: set the promotion policy of the cache a
// vbdev runs on, and the nhit parameters.
func (a *API) ocfSetPromotion(_ context.Context, params json.RawMessage) (any, error) {
	var p setPromotionParams
	if err := jsonrpc.DecodeParams(params, &p, errInvalidParams); err != nil {
		return nil, err
	}
	if _, err := a.svc.OCF.Get(p.Name); err != nil {
		return nil, errNoSuchVbdev(p.Name)
	}
	kind, err := ocf.ParsePromotionKind(p.Policy)
	if err != nil {
		return nil, invalidPolicyParam(err)
	}
	err = a.svc.OCF.SetPromotion(p.Name, func(c *ocf.PromotionParams) {
		c.Kind = kind
		setUint32(&c.InsertionThreshold, p.InsertionThreshold)
		setUint32(&c.TriggerThreshold, p.TriggerThreshold)
	})
	if err != nil {
		return nil, policyFailure(p.Name, "Could not set promotion policy", err)
	}
	return true, nil
}

// policiesObject is bdev_ocf_get_policies' result. Times are in the units
// the set methods take them in; the sequential cutoff threshold in KiB.
type policiesObject struct {
	Cleaning struct {
		Policy string `json:"policy"`
		ALRU   struct {
			WakeUp            int64  `json:"wake_up"`            // s
			StalenessTime     int64  `json:"staleness_time"`     // s
			FlushMaxBuffers   uint32 `json:"flush_max_buffers"`  // lines
			ActivityThreshold int64  `json:"activity_threshold"` // ms
			MaxDirtyRatio     uint32 `json:"max_dirty_ratio"`    // percent
		} `json:"alru"`
		ACP struct {
			WakeUp          int64  `json:"wake_up"`           // ms
			FlushMaxBuffers uint32 `json:"flush_max_buffers"` // lines
		} `json:"acp"`
		MaxInflight uint32 `json:"max_inflight"` // lines
	} `json:"cleaning"`
	Promotion struct {
		Policy string `json:"policy"`
		NHit   struct {
			InsertionThreshold uint32 `json:"insertion_threshold"`
			TriggerThreshold   uint32 `json:"trigger_threshold"` // percent
		} `json:"nhit"`
	} `json:"promotion"`
	SeqCutoff struct {
		Policy         string `json:"policy"`
		Threshold      uint32 `json:"threshold"` // KiB
		PromotionCount uint32 `json:"promotion_count"`
	} `json:"seqcutoff"`
}

func newPoliciesObject(p vbdev.Policies) policiesObject {
	var o policiesObject
	c := p.Cleaning
	o.Cleaning.Policy = c.Kind.String()
	o.Cleaning.ALRU.WakeUp = int64(c.ALRU.WakeUp / time.Second)
	o.Cleaning.ALRU.StalenessTime = int64(c.ALRU.StalenessTime / time.Second)
	o.Cleaning.ALRU.FlushMaxBuffers = c.ALRU.FlushMaxBuffers
	o.Cleaning.ALRU.ActivityThreshold = int64(c.ALRU.ActivityThreshold / time.Millisecond)
	o.Cleaning.ACP.WakeUp = int64(c.ACP.WakeUp / time.Millisecond)
	o.Cleaning.ACP.FlushMaxBuffers = c.ACP.FlushMaxBuffers
	o.Cleaning.ALRU.MaxDirtyRatio = c.ALRU.MaxDirtyRatio
	o.Cleaning.MaxInflight = c.MaxInflight
	o.Promotion.Policy = p.Promotion.Kind.String()
	o.Promotion.NHit.InsertionThreshold = p.Promotion.InsertionThreshold
	o.Promotion.NHit.TriggerThreshold = p.Promotion.TriggerThreshold
	o.SeqCutoff.Policy = p.SeqCutoff.Policy.String()
	o.SeqCutoff.Threshold = thresholdKiB(p.SeqCutoff.ThresholdBytes)
	o.SeqCutoff.PromotionCount = p.SeqCutoff.PromotionCount
	return o
}

// ocfGetPolicies is blockcache's: the cleaning, promotion and sequential
// cutoff policies of a started vbdev.
func (a *API) ocfGetPolicies(_ context.Context, params json.RawMessage) (any, error) {
	var p nameParams
	if err := jsonrpc.DecodeParams(params, &p, errInvalidParams); err != nil {
		return nil, err
	}
	pol, err := a.svc.OCF.GetPolicies(p.Name)
	switch {
	case errors.Is(err, vbdev.ErrNoSuchVbdev):
		return nil, errNoSuchVbdev(p.Name)
	case err != nil:
		return nil, ocfFailure("Could not get OCF policies", err)
	}
	return newPoliciesObject(pol), nil
}

// Default policies, as a fresh cache has them. A vbdev whose policies are
// these gets no policy entries in the config, which keeps SPDK's shape.
var (
	defaultCleaning  = ocf.DefaultCleaningParams()
	defaultPromotion = ocf.DefaultPromotionParams()
	defaultSeqCutoff = ocf.DefaultSeqCutoffParams()
)

// policyConfig returns the config entries that restore a started vbdev's
// policies where they differ from the defaults: its sequential cutoff and,
// with withCache (for the first started vbdev of its cache), the cache's
// cleaning and promotion. Each entry depends on the vbdev, so it follows
// the vbdev's bdev_ocf_create entry.
func (a *API) policyConfig(name string, withCache bool) []configItem {
	pol, err := a.svc.OCF.GetPolicies(name)
	if err != nil {
		return nil // gone or stopped since it was listed
	}
	o := newPoliciesObject(pol)
	var out []configItem
	add := func(method string, params any) {
		out = append(out, configItem{name: "\x00" + method + "\x00" + name, deps: []string{name},
			entry: configEntry{Method: method, Params: params}})
	}
	if pol.SeqCutoff != defaultSeqCutoff {
		add("bdev_ocf_set_seqcutoff", setSeqCutoffParams{Name: name, Policy: o.SeqCutoff.Policy,
			Threshold: o.SeqCutoff.Threshold, PromotionCount: o.SeqCutoff.PromotionCount})
	}
	if !withCache {
		return out
	}
	if pol.Cleaning != defaultCleaning {
		u := func(v int64) *uint32 { x := uint32(v); return &x }
		c := o.Cleaning
		sp := setCleaningParams{Name: name, Policy: c.Policy,
			ALRUWakeUp: u(c.ALRU.WakeUp), ALRUStalenessTime: u(c.ALRU.StalenessTime),
			ALRUFlushMaxBuffers: u(int64(c.ALRU.FlushMaxBuffers)), ALRUActivityThreshold: u(c.ALRU.ActivityThreshold),
			ACPWakeUp: u(c.ACP.WakeUp), ACPFlushMaxBuffers: u(int64(c.ACP.FlushMaxBuffers))}
		// The parameters blockcache added are written only when changed,
		// so that a config of default ones keeps the shape it had.
		if c.ALRU.MaxDirtyRatio != defaultCleaning.ALRU.MaxDirtyRatio {
			sp.ALRUMaxDirtyRatio = u(int64(c.ALRU.MaxDirtyRatio))
		}
		if c.MaxInflight != defaultCleaning.MaxInflight {
			sp.MaxInflight = u(int64(c.MaxInflight))
		}
		add("bdev_ocf_set_cleaning", sp)
	}
	if pol.Promotion != defaultPromotion {
		n := o.Promotion.NHit
		add("bdev_ocf_set_promotion", setPromotionParams{Name: name, Policy: o.Promotion.Policy,
			InsertionThreshold: &n.InsertionThreshold, TriggerThreshold: &n.TriggerThreshold})
	}
	return out
}
