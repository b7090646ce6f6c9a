package vbdev

// ProductName is what bdev_get_bdevs shows for a cached volume. It is SPDK's
// string, so scripts that select OCF vbdevs by product name keep working.
const ProductName = "SPDK OCF"

// State is where a vbdev is in its lifecycle. The transitions:
//
//	create, a base missing               -> waiting
//	create or its last base added, start -> started, or failed
//	failed, retried, start               -> started, waiting, or failed (new reason)
//	started, core bdev hot-removed       -> waiting (the cache keeps the core's data)
//	any state, Delete                    -> gone
//
// A retry is a bdev_ocf_create naming the failed vbdev with its own bases,
// or one of those bases being added again. Only Restore (the start-up
// config) or a waiting vbdev reaches failed: a bdev_ocf_create whose own
// start fails leaves nothing behind, as in SPDK.
type State int

const (
	// StateWaiting: a base bdev is missing (never there yet, or a core
	// hot-removed from under the volume); the vbdev starts when it
	// appears.
	StateWaiting State = iota
	// StateStarted: the volume is registered and serves IO.
	StateStarted
	// StateFailed: both bases existed but the start failed (a damaged
	// cache, a claimed base, a core that is not the recorded one). The
	// vbdev holds no claims and keeps its definition and the reason.
	StateFailed
)

func (s State) String() string {
	switch s {
	case StateWaiting:
		return "waiting"
	case StateStarted:
		return "started"
	case StateFailed:
		return "failed"
	}
	return "unknown"
}

// state is v's State. Callers hold Manager.mu.
func (v *Vbdev) state() State {
	switch {
	case v.core != nil:
		return StateStarted
	case v.failed != nil:
		return StateFailed
	}
	return StateWaiting
}
