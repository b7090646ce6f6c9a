package rpc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"blockcache/internal/bdev"
	"blockcache/internal/jsonrpc"
	"blockcache/internal/ocf"
	"blockcache/internal/vbdev"
)

// Cache policies of an OCF vbdev: SPDK's bdev_ocf_set_seqcutoff, and
// blockcache's bdev_ocf_set_cleaning, bdev_ocf_set_promotion and
// bdev_ocf_get_policies. Cleaning and promotion belong to the cache (every
// vbdev on it shares them), sequential cutoff to the vbdev's core.

// Sequential cutoff limits on the wire: rpc.py's threshold is in KiB.
const (
	minSeqThresholdKiB = 1
	maxSeqThresholdKiB = (ocf.MaxSeqCutoffThreshold + 1) / 1024 // 4194304 KiB = 4 GiB, stored as 4 GiB less a byte
	minSeqPromotion    = 1
	maxSeqPromotion    = ocf.MaxSeqCutoffPromotionCount
)

const seqCutoffFailure = "OCF could not set sequential cutoff parameters"

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
	return jsonrpc.Errorf(jsonrpc.CodeInternalError, "%s: %d", seqCutoffFailure, -22).WithData(format, args...)
}

// thresholdBytes converts a threshold in KiB to ocf's bytes. ocf holds it
// in a uint32, one byte short of the 4 GiB maximum: that maximum becomes
// 4 GiB - 1 byte, which cuts off exactly the same streams (IO comes in
// whole sectors). thresholdKiB rounds back up, so it reads 4194304 KiB.
func thresholdBytes(kib uint32) uint32 {
	return uint32(min(uint64(kib)*1024, math.MaxUint32))
}

func thresholdKiB(bytes uint32) uint32 {
	return uint32((uint64(bytes) + 1023) / 1024)
}

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
	if p.Threshold != 0 && (p.Threshold < minSeqThresholdKiB || p.Threshold > maxSeqThresholdKiB) {
		return nil, seqCutoffInvalid("threshold %d KiB out of range (allowed %d..%d KiB; 0 or absent leaves it unchanged)",
			p.Threshold, minSeqThresholdKiB, maxSeqThresholdKiB)
	}
	if p.PromotionCount != 0 && (p.PromotionCount < minSeqPromotion || p.PromotionCount > maxSeqPromotion) {
		return nil, seqCutoffInvalid("promotion_count %d out of range (allowed %d..%d; 0 or absent leaves it unchanged)",
			p.PromotionCount, minSeqPromotion, maxSeqPromotion)
	}
	err = a.svc.OCF.SetSeqCutoff(p.Name, func(s *ocf.SeqCutoffParams) {
		s.Policy = policy
		if p.Threshold != 0 {
			s.ThresholdBytes = thresholdBytes(p.Threshold)
		}
		if p.PromotionCount != 0 {
			s.PromotionCount = p.PromotionCount
		}
	})
	if err != nil {
		return nil, policyFailure(p.Name, seqCutoffFailure, err)
	}
	return true, nil
}

// policyFailure is the reply to a policy change the engine refused for a
// reason other than a parameter out of range: the vbdev went away, has
// not started (-19), or its metadata could not be written.
func policyFailure(name, prefix string, err error) error {
	switch {
	case errors.Is(err, vbdev.ErrNoSuchVbdev):
		return errNoSuchVbdev(name)
	case errors.Is(err, vbdev.ErrNotStarted), errors.Is(err, ocf.ErrInvalidConfig):
		return ocfFailure(prefix, err)
	}
	// vbdev marks every refusal as an invalid parameter, a failed
	// metadata write included: report that as the IO error it is.
	return jsonrpc.Errorf(jsonrpc.CodeInternalError, "%s: %d", prefix, -int(bdev.Errno(err))).WithData("%s", err.Error())
}

// invalidPolicyParam is blockcache's reply to a policy parameter out of
// range: -32602 with a message naming it and its allowed range.
func invalidPolicyParam(msg string, err error) error {
	return jsonrpc.Errorf(jsonrpc.CodeInvalidParams, "%s", msg).WithData("%s", err.Error())
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

// cleaningParamNames maps ocf's names of the cleaning parameters (in
// CleaningParams.Validate's errors) to bdev_ocf_set_cleaning's.
var cleaningParamNames = [][2]string{
	{"alru wake_up", "alru_wake_up"},
	{"alru staleness_time", "alru_staleness_time"},
	{"alru flush_max_buffers", "alru_flush_max_buffers"},
	{"alru activity_threshold", "alru_activity_threshold"},
	{"acp wake_up", "acp_wake_up"},
	{"acp flush_max_buffers", "acp_flush_max_buffers"},
	{"alru max_dirty_ratio", "alru_max_dirty_ratio"},
}

// cleaningMessage is ocf's Validate error with the parameter named as the
// RPC names it, e.g. "cleaning parameter alru_wake_up = 4000s: invalid
// cache configuration (allowed 0..3600s)".
func cleaningMessage(err error) string {
	msg := err.Error()
	for _, n := range cleaningParamNames {
		if strings.Contains(msg, " "+n[0]+" ") {
			return strings.Replace(msg, " "+n[0]+" ", " "+n[1]+" ", 1)
		}
	}
	return msg
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
		return nil, invalidPolicyParam(err.Error(), err)
	}
	var invalid error
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
		invalid = c.Validate()
	})
	switch {
	case invalid != nil:
		return nil, invalidPolicyParam(cleaningMessage(invalid), err)
	case err != nil:
		return nil, policyFailure(p.Name, "Could not set cleaning policy", err)
	}
	return true, nil
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
		return nil, invalidPolicyParam(err.Error(), err)
	}
	// ocf takes an insertion threshold of 0 for its default; here it is
	// out of range like any other.
	if t := p.InsertionThreshold; t != nil && (*t < ocf.MinNHitInsertionThreshold || *t > ocf.MaxNHitInsertionThreshold) {
		err := fmt.Errorf("nhit insertion_threshold %d: %w (allowed %d..%d)", *t, ocf.ErrInvalidConfig,
			ocf.MinNHitInsertionThreshold, ocf.MaxNHitInsertionThreshold)
		return nil, invalidPolicyParam(err.Error(), err)
	}
	err = a.svc.OCF.SetPromotion(p.Name, func(c *ocf.PromotionParams) {
		c.Kind = kind
		setUint32(&c.InsertionThreshold, p.InsertionThreshold)
		if p.TriggerThreshold != nil {
			c.TriggerThreshold, c.TriggerSet = *p.TriggerThreshold, true
		}
	})
	switch {
	case errors.Is(err, ocf.ErrInvalidConfig) && !errors.Is(err, vbdev.ErrNotStarted):
		return nil, invalidPolicyParam(engineCause(err).Error(), err)
	case err != nil:
		return nil, policyFailure(p.Name, "Could not set promotion policy", err)
	}
	return true, nil
}

// engineCause is the engine's error inside vbdev's "OCF vbdev X: invalid
// parameter: <engine error>", or err itself.
func engineCause(err error) error {
	if u, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range u.Unwrap() {
			if errors.Is(e, ocf.ErrInvalidConfig) {
				return e
			}
		}
	}
	return err
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
	defaultPromotion = ocf.PromotionParams{Kind: ocf.PromoteAlwaysKind,
		InsertionThreshold: ocf.DefaultNHitInsertionThreshold, TriggerThreshold: ocf.DefaultNHitTriggerThreshold}
	defaultSeqCutoff = ocf.SeqCutoffParams{Policy: ocf.SeqCutoffFull,
		ThresholdBytes: ocf.DefaultSeqCutoffThreshold, PromotionCount: ocf.DefaultSeqCutoffPromotionCount}
)

func isDefaultPromotion(p ocf.PromotionParams) bool {
	return p.Kind == defaultPromotion.Kind && p.InsertionThreshold == defaultPromotion.InsertionThreshold &&
		p.TriggerThreshold == defaultPromotion.TriggerThreshold
}

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
	if !isDefaultPromotion(pol.Promotion) {
		n := o.Promotion.NHit
		add("bdev_ocf_set_promotion", setPromotionParams{Name: name, Policy: o.Promotion.Policy,
			InsertionThreshold: &n.InsertionThreshold, TriggerThreshold: &n.TriggerThreshold})
	}
	return out
}
