package ocf_test

import (
	"errors"
	"syscall"
	"testing"
	"time"

	"blockcache/internal/bdev"
	"blockcache/internal/bdev/errinj"
	"blockcache/internal/ocf"
	"blockcache/internal/ocf/ocftest"
)

// seqCutoffPolicy is the default sequential cutoff with another policy.
func seqCutoffPolicy(policy ocf.SeqCutoffPolicy) ocf.SeqCutoffParams {
	p := ocf.DefaultSeqCutoffParams()
	p.Policy = policy
	return p
}

// paramCase is a settings value with one parameter out of range and the
// ParamError its Validate must return.
type paramCase struct {
	validate func() error
	want     ocf.ParamError
}

func cleaningCase(edit func(*ocf.CleaningParams), want ocf.ParamError) paramCase {
	p := ocf.DefaultCleaningParams()
	edit(&p)
	return paramCase{p.Validate, want}
}

func promotionCase(edit func(*ocf.PromotionParams), want ocf.ParamError) paramCase {
	p := ocf.DefaultPromotionParams()
	edit(&p)
	return paramCase{p.Validate, want}
}

func seqCutoffCase(edit func(*ocf.SeqCutoffParams), want ocf.ParamError) paramCase {
	p := ocf.DefaultSeqCutoffParams()
	edit(&p)
	return paramCase{p.Validate, want}
}

// TestParamErrors: each settings type's Validate names the first parameter
// out of range with its value, range and unit, in one error type that
// wraps ErrInvalidConfig; 0 is checked as a value, not taken as a default.
func TestParamErrors(t *testing.T) {
	const alru, acp = "cleaning alru", "cleaning acp"
	pe := func(policy, param string, v, lo, hi int64, unit string) ocf.ParamError {
		return ocf.ParamError{Policy: policy, Param: param, Value: v, Min: lo, Max: hi, Unit: unit}
	}
	for _, c := range []paramCase{
		cleaningCase(func(p *ocf.CleaningParams) { p.Kind = 3 }, pe("cleaning", "policy", 3, 0, 2, "")),
		cleaningCase(func(p *ocf.CleaningParams) { p.ALRU.WakeUp = 3601 * time.Second }, pe(alru, "wake_up", 3601, 0, 3600, "s")),
		cleaningCase(func(p *ocf.CleaningParams) { p.ALRU.StalenessTime = 0 }, pe(alru, "staleness_time", 0, 1, 3600, "s")),
		cleaningCase(func(p *ocf.CleaningParams) { p.ALRU.StalenessTime = 3601 * time.Second }, pe(alru, "staleness_time", 3601, 1, 3600, "s")),
		cleaningCase(func(p *ocf.CleaningParams) { p.ALRU.FlushMaxBuffers = 0 }, pe(alru, "flush_max_buffers", 0, 1, 10000, "")),
		cleaningCase(func(p *ocf.CleaningParams) { p.ALRU.ActivityThreshold = 1000001 * time.Millisecond },
			pe(alru, "activity_threshold", 1000001, 0, 1000000, "ms")),
		cleaningCase(func(p *ocf.CleaningParams) { p.ALRU.MaxDirtyRatio = 101 }, pe(alru, "max_dirty_ratio", 101, 0, 100, "%")),
		cleaningCase(func(p *ocf.CleaningParams) { p.ACP.WakeUp = 10001 * time.Millisecond }, pe(acp, "wake_up", 10001, 0, 10000, "ms")),
		cleaningCase(func(p *ocf.CleaningParams) { p.ACP.FlushMaxBuffers = 10001 }, pe(acp, "flush_max_buffers", 10001, 1, 10000, "")),
		cleaningCase(func(p *ocf.CleaningParams) { p.MaxInflight = 0 }, pe("cleaning", "max_inflight", 0, 1, 1024, "")),
		cleaningCase(func(p *ocf.CleaningParams) { p.MaxInflight = 1025 }, pe("cleaning", "max_inflight", 1025, 1, 1024, "")),
		promotionCase(func(p *ocf.PromotionParams) { p.Kind = 2 }, pe("promotion", "policy", 2, 0, 1, "")),
		promotionCase(func(p *ocf.PromotionParams) { p.InsertionThreshold = 0 }, pe("promotion nhit", "insertion_threshold", 0, 2, 1000, "")),
		promotionCase(func(p *ocf.PromotionParams) { p.InsertionThreshold = 1001 }, pe("promotion nhit", "insertion_threshold", 1001, 2, 1000, "")),
		promotionCase(func(p *ocf.PromotionParams) { p.TriggerThreshold = 101 }, pe("promotion nhit", "trigger_threshold", 101, 0, 100, "%")),
		seqCutoffCase(func(p *ocf.SeqCutoffParams) { p.Policy = 3 }, pe("sequential cutoff", "policy", 3, 0, 2, "")),
		seqCutoffCase(func(p *ocf.SeqCutoffParams) { p.ThresholdBytes = 0 }, pe("sequential cutoff", "threshold", 0, 1, 4<<30, "bytes")),
		seqCutoffCase(func(p *ocf.SeqCutoffParams) { p.ThresholdBytes = 4<<30 + 1 }, pe("sequential cutoff", "threshold", 4<<30+1, 1, 4<<30, "bytes")),
		seqCutoffCase(func(p *ocf.SeqCutoffParams) { p.ThresholdBytes = 1 << 62 }, pe("sequential cutoff", "threshold", 1<<62, 1, 4<<30, "bytes")),
		seqCutoffCase(func(p *ocf.SeqCutoffParams) { p.PromotionCount = 0 }, pe("sequential cutoff", "promotion_count", 0, 1, 65535, "")),
		seqCutoffCase(func(p *ocf.SeqCutoffParams) { p.PromotionCount = 65536 }, pe("sequential cutoff", "promotion_count", 65536, 1, 65535, "")),
	} {
		err := c.validate()
		var got *ocf.ParamError
		if !errors.As(err, &got) || *got != c.want {
			t.Errorf("%s %s: Validate() = %v, want %+v", c.want.Policy, c.want.Param, err, c.want)
			continue
		}
		if !errors.Is(err, ocf.ErrInvalidConfig) {
			t.Errorf("%v does not wrap ErrInvalidConfig", err)
		}
	}
}

// TestParamErrorMessage: the message says what, the value, the range and
// the unit; Describe lets an edge name the parameter its own way.
func TestParamErrorMessage(t *testing.T) {
	for _, c := range []struct {
		e    ocf.ParamError
		want string
	}{
		{ocf.ParamError{Policy: "cleaning alru", Param: "wake_up", Value: 3601, Max: 3600, Unit: "s"},
			"cleaning alru: wake_up 3601 s out of range (allowed 0..3600 s)"},
		{ocf.ParamError{Policy: "promotion nhit", Param: "trigger_threshold", Value: 101, Max: 100, Unit: "%"},
			"promotion nhit: trigger_threshold 101% out of range (allowed 0..100%)"},
		{ocf.ParamError{Policy: "cleaning", Param: "max_inflight", Value: 0, Min: 1, Max: 1024},
			"cleaning: max_inflight 0 out of range (allowed 1..1024)"},
	} {
		if got := c.e.Error(); got != c.want {
			t.Errorf("Error() = %q, want %q", got, c.want)
		}
	}
	e := ocf.ParamError{Policy: "cleaning alru", Param: "wake_up", Value: 3601, Max: 3600, Unit: "s"}
	if got, want := e.Describe("alru_wake_up"), "alru_wake_up 3601 s out of range (allowed 0..3600 s)"; got != want {
		t.Errorf("Describe = %q, want %q", got, want)
	}
}

// TestParamDefaultsAndEdges: the defaults are valid and are what a new
// cache and core start with, and every range's edges are accepted.
func TestParamDefaultsAndEdges(t *testing.T) {
	env := ocftest.New(t, ocftest.Options{Lines: 16, Mode: ocf.ModeWT})
	if got, want := env.Cache.Cleaning(), ocf.DefaultCleaningParams(); got != want {
		t.Errorf("new cache's cleaning %+v, want %+v", got, want)
	}
	if got, want := env.Cache.Promotion(), (ocf.PromotionParams{Kind: ocf.PromoteAlwaysKind, InsertionThreshold: 3, TriggerThreshold: 80}); got != want {
		t.Errorf("new cache's promotion %+v, want %+v", got, want)
	}
	if got, want := env.Cores[0].SeqCutoff(), (ocf.SeqCutoffParams{Policy: ocf.SeqCutoffFull, ThresholdBytes: 1024, PromotionCount: 8}); got != want {
		t.Errorf("new core's sequential cutoff %+v, want %+v", got, want)
	}
	lo := ocf.CleaningParams{Kind: ocf.CleanALRU, ALRU: ocf.ALRUParams{StalenessTime: time.Second, FlushMaxBuffers: 1},
		ACP: ocf.ACPParams{FlushMaxBuffers: 1}, MaxInflight: 1}
	hi := ocf.CleaningParams{Kind: ocf.CleanNOP, ALRU: ocf.ALRUParams{WakeUp: time.Hour, StalenessTime: time.Hour, FlushMaxBuffers: 10000,
		ActivityThreshold: 1000 * time.Second, MaxDirtyRatio: 100}, ACP: ocf.ACPParams{WakeUp: 10 * time.Second, FlushMaxBuffers: 10000}, MaxInflight: 1024}
	for _, p := range []ocf.CleaningParams{ocf.DefaultCleaningParams(), lo, hi} {
		if err := env.Cache.SetCleaning(p); err != nil || env.Cache.Cleaning() != p {
			t.Errorf("SetCleaning(%+v): %v; in force %+v", p, err, env.Cache.Cleaning())
		}
	}
	for _, p := range []ocf.PromotionParams{ocf.DefaultPromotionParams(), {ocf.PromoteNHitKind, 2, 0}, {ocf.PromoteNHitKind, 1000, 100}} {
		if err := env.Cache.SetPromotion(p); err != nil || env.Cache.Promotion() != p {
			t.Errorf("SetPromotion(%+v): %v; in force %+v", p, err, env.Cache.Promotion())
		}
	}
	for _, p := range []ocf.SeqCutoffParams{ocf.DefaultSeqCutoffParams(), {ocf.SeqCutoffAlways, 1, 1}, {ocf.SeqCutoffNever, 4 << 30, 65535}} {
		if err := env.Cores[0].SetSeqCutoff(p); err != nil || env.Cores[0].SeqCutoff() != p {
			t.Errorf("SetSeqCutoff(%+v): %v; in force %+v", p, err, env.Cores[0].SeqCutoff())
		}
	}
}

// TestPolicyChangeMetadataWriteFails: when the superblock cannot be
// written, each setter returns the device's error (EIO) and the settings
// in force stay the old ones; once the device works again, they change.
func TestPolicyChangeMetadataWriteFails(t *testing.T) {
	fail := &errinj.Toggle{Injector: errinj.ErrInjected.If(errinj.Writes())}
	env := ocftest.New(t, ocftest.Options{Lines: 16, Mode: ocf.ModeWT,
		WrapCache: func(d bdev.Device) bdev.Device { return errinj.Wrap(d, fail) }})
	c, co := env.Cache, env.Cores[0]
	cleaning := ocf.DefaultCleaningParams()
	cleaning.Kind, cleaning.MaxInflight = ocf.CleanACP, 7
	promotion := ocf.PromotionParams{Kind: ocf.PromoteNHitKind, InsertionThreshold: 5, TriggerThreshold: 10}
	seq := ocf.SeqCutoffParams{Policy: ocf.SeqCutoffNever, ThresholdBytes: 4096, PromotionCount: 2}
	oldC, oldP, oldS := c.Cleaning(), c.Promotion(), co.SeqCutoff()
	sets := []struct {
		what string
		set  func() error
		kept func() bool
	}{
		{"cleaning", func() error { return c.SetCleaning(cleaning) }, func() bool { return c.Cleaning() == oldC }},
		{"promotion", func() error { return c.SetPromotion(promotion) }, func() bool { return c.Promotion() == oldP }},
		{"sequential cutoff", func() error { return co.SetSeqCutoff(seq) }, func() bool { return co.SeqCutoff() == oldS }},
	}
	fail.On()
	for _, s := range sets {
		err := s.set()
		if !errors.Is(err, errinj.ErrInjected) || bdev.Errno(err) != syscall.EIO || errors.Is(err, ocf.ErrInvalidConfig) {
			t.Errorf("set %s with the superblock write failing: %v, want the injected EIO", s.what, err)
		}
		if !s.kept() {
			t.Errorf("set %s failed but changed the settings in force", s.what)
		}
	}
	fail.Off()
	for _, s := range sets {
		if err := s.set(); err != nil || s.kept() {
			t.Errorf("set %s once the device works: %v (old settings kept: %v)", s.what, err, s.kept())
		}
	}
	if c.Cleaning() != cleaning || c.Promotion() != promotion || co.SeqCutoff() != seq {
		t.Errorf("in force: %+v, %+v, %+v", c.Cleaning(), c.Promotion(), co.SeqCutoff())
	}
}
