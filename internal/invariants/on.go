//go:build invariants || race

// Package invariants gates costly self-checks. They are on in test builds
// (the `invariants` tag, which `make test` sets, or -race) and compiled out
// otherwise, like pebble's internal/invariants.
package invariants

import "math/rand/v2"

// Enabled is true when the invariants or race build tag is set.
const Enabled = true

// Sometimes returns true with the given percent probability in invariant
// builds, so tests take rare paths at random; it is always false otherwise.
func Sometimes(percent int) bool { return rand.IntN(100) < percent }
