package ocf

import (
	"fmt"
	"strconv"
)

// The three policy settings (CleaningParams, PromotionParams,
// SeqCutoffParams) share one shape: an exported default
// (DefaultCleaningParams, DefaultPromotionParams, DefaultSeqCutoffParams),
// a Validate method that returns a *ParamError for the first parameter out
// of range, and a setter that calls Validate and takes every field as it
// is: 0 is a value, never "the default".

// ParamError reports a policy parameter out of its range. It wraps
// ErrInvalidConfig. Value, Min and Max are in Unit.
type ParamError struct {
	// Policy names the settings and, for a parameter of one policy only,
	// that policy: "cleaning", "cleaning alru", "promotion nhit",
	// "sequential cutoff".
	Policy string
	// Param is the parameter as the engine names it, e.g. "wake_up".
	Param           string
	Value, Min, Max int64
	// Unit is "s", "ms", "%", "bytes", or "" for a count.
	Unit string
}

// Error reads e.g. "cleaning alru: wake_up 3601 s out of range (allowed
// 0..3600 s)".
func (e *ParamError) Error() string { return e.Policy + ": " + e.Describe(e.Param) }

// Describe is the message without the policy, calling the parameter name:
// for an edge that names parameters its own way.
func (e *ParamError) Describe(name string) string {
	return fmt.Sprintf("%s %s out of range (allowed %d..%s)", name, withUnit(e.Value, e.Unit), e.Min, withUnit(e.Max, e.Unit))
}

// Unwrap makes errors.Is(err, ErrInvalidConfig) true.
func (e *ParamError) Unwrap() error { return ErrInvalidConfig }

func withUnit(v int64, unit string) string {
	switch unit {
	case "":
		return strconv.FormatInt(v, 10)
	case "%":
		return strconv.FormatInt(v, 10) + unit
	}
	return strconv.FormatInt(v, 10) + " " + unit
}

// paramCheck is one parameter's value and range, for checkParams.
type paramCheck struct {
	policy, param string
	v, min, max   int64
	unit          string
}

// checkParams returns a *ParamError for the first of cs out of range, or
// nil.
func checkParams(cs ...paramCheck) error {
	for _, c := range cs {
		if c.v < c.min || c.v > c.max {
			return &ParamError{Policy: c.policy, Param: c.param, Value: c.v, Min: c.min, Max: c.max, Unit: c.unit}
		}
	}
	return nil
}
