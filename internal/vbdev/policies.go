package vbdev

import (
	"errors"
	"fmt"

	"blockcache/internal/ocf"
)

// Policies are a started vbdev's cache policies: cleaning and promotion
// belong to its cache (shared by every vbdev on it), sequential cutoff to
// its core.
type Policies struct {
	Cleaning  ocf.CleaningParams
	Promotion ocf.PromotionParams
	SeqCutoff ocf.SeqCutoffParams
}

// policyError wraps a setter's failure: ErrInvalidParam for a value out of
// range, the error as it is (an IO failure writing the metadata) otherwise.
func policyError(name string, err error) error {
	if errors.Is(err, ocf.ErrInvalidConfig) {
		return fmt.Errorf("OCF vbdev %q: %w: %w", name, ErrInvalidParam, err)
	}
	return fmt.Errorf("OCF vbdev %q: %w", name, err)
}

// GetPolicies returns a started vbdev's policies.
func (m *Manager) GetPolicies(name string) (Policies, error) {
	m.lock()
	defer m.unlock()
	v, err := m.startedLocked(name)
	if err != nil {
		return Policies{}, err
	}
	return Policies{Cleaning: v.inst.cache.Cleaning(), Promotion: v.inst.cache.Promotion(), SeqCutoff: v.core.SeqCutoff()}, nil
}

// SetCleaning changes the cleaning policy of the cache a vbdev runs on;
// edit receives the current parameters to change.
func (m *Manager) SetCleaning(name string, edit func(*ocf.CleaningParams)) error {
	m.lock()
	defer m.unlock()
	v, err := m.startedLocked(name)
	if err != nil {
		return err
	}
	p := v.inst.cache.Cleaning()
	edit(&p)
	if err := v.inst.cache.SetCleaning(p); err != nil {
		return policyError(name, err)
	}
	m.log.Info("cleaning policy set", "vbdev", name, "cache", v.params.CacheBdev, "policy", p.Kind.String())
	return nil
}

// SetPromotion changes the promotion policy of the cache a vbdev runs on;
// edit receives the current parameters to change.
func (m *Manager) SetPromotion(name string, edit func(*ocf.PromotionParams)) error {
	m.lock()
	defer m.unlock()
	v, err := m.startedLocked(name)
	if err != nil {
		return err
	}
	p := v.inst.cache.Promotion()
	edit(&p)
	if err := v.inst.cache.SetPromotion(p); err != nil {
		return policyError(name, err)
	}
	m.log.Info("promotion policy set", "vbdev", name, "cache", v.params.CacheBdev, "policy", p.Kind.String())
	return nil
}

// SetSeqCutoff changes a vbdev's sequential cutoff; edit receives the
// current parameters to change.
func (m *Manager) SetSeqCutoff(name string, edit func(*ocf.SeqCutoffParams)) error {
	m.lock()
	defer m.unlock()
	v, err := m.startedLocked(name)
	if err != nil {
		return err
	}
	p := v.core.SeqCutoff()
	edit(&p)
	if err := v.core.SetSeqCutoff(p); err != nil {
		return policyError(name, err)
	}
	m.log.Info("sequential cutoff set", "vbdev", name, "policy", p.Policy.String(), "threshold_bytes", p.ThresholdBytes, "promotion_count", p.PromotionCount)
	return nil
}
