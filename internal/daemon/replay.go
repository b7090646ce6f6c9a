package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"

	"blockcache/internal/jsonrpc"
	"blockcache/internal/rpc"
	"blockcache/internal/vbdev"
)

// subsystemOrder is the order subsystems replay in.
var subsystemOrder = []string{"bdev", "nbd"}

// Replay calls every method of doc in-process, subsystem by subsystem in
// init order, as the start-up config.
//
// An entry that is not a valid call (an unknown method, params that do not
// decode) stops it with an error naming the entry: the file is wrong, and
// only its author can say what was meant. Any other failure is logged at
// ERROR and the entry skipped, so that one missing image file or one
// damaged cache never takes the other volumes down: a bdev_ocf_create
// whose cache cannot be loaded keeps its vbdev, failed, with the reason
// (vbdev.Manager.Restore); an entry that needs a bdev which failed is
// logged with that bdev and why it failed, not with the "No such device" it
// gets. The skipped entries are carried in the persisted config (carry.go),
// so that the next start tries them again.
func (d *Daemon) Replay(ctx context.Context, doc *Document) error {
	ctx = rpc.AtStartup(ctx)
	r := replay{d: d, notCreated: map[string]error{}}
	for _, name := range subsystemOrder {
		for _, ss := range doc.Subsystems {
			if ss.Subsystem != name {
				continue
			}
			for i, m := range ss.Config {
				_, err := d.rpc.Call(ctx, m.Method, m.Params)
				if err == nil {
					continue
				}
				if invalidCall(err) {
					return fmt.Errorf("config: subsystem %s entry %d (%s): %w", name, i, m.Method, err)
				}
				r.failed(name, i, m, err)
			}
		}
	}
	for _, ss := range doc.Subsystems {
		if !slices.Contains(subsystemOrder, ss.Subsystem) && len(ss.Config) > 0 {
			d.log.Warn("config: subsystem not supported; its entries were skipped", "subsystem", ss.Subsystem, "entries", len(ss.Config))
		}
	}
	d.carried.set(r.skipped)
	if r.count > 0 {
		d.log.Error("start-up config: some entries failed; everything else serves, and the RPC socket answers for repairs",
			"failed_entries", r.count, "failed_volumes", strings.Join(r.failedVolumes(), ","))
	}
	return nil
}

// invalidCall reports whether a replayed entry failed because it is not a
// valid call at all: an unknown method, or params that do not decode
// (whichever of SPDK's two decode errors the method answers).
func invalidCall(err error) bool {
	var je *jsonrpc.Error
	if !errors.As(err, &je) {
		return false
	}
	return je.Code == jsonrpc.CodeMethodNotFound || je.Message == jsonrpc.MsgDecodeFailed || je.Message == jsonrpc.MsgInvalidParams
}

// replay is the state of one Replay: which bdevs failed to be created, and
// the entries skipped.
type replay struct {
	d *Daemon
	// notCreated holds why each bdev whose create entry failed is missing.
	notCreated map[string]error
	// skipped holds the failed entries by subsystem, in config order.
	skipped map[string][]Method
	count   int
}

// failed logs a failed entry with its real cause and records it.
func (r *replay) failed(subsystem string, i int, m Method, err error) {
	r.count++
	if r.skipped == nil {
		r.skipped = map[string][]Method{}
	}
	r.skipped[subsystem] = append(r.skipped[subsystem], m)
	e := parseEntry(m)
	if name := e.created(); name != "" {
		r.notCreated[name] = err
		if in, gerr := r.d.ocf.Get(name); gerr == nil && in.State == vbdev.StateFailed {
			return // the manager logged why, as it marked the vbdev failed
		}
	}
	attrs := []any{slog.String("subsystem", subsystem), slog.Int("entry", i), slog.String("method", m.Method)}
	if dep, cause, reason := r.missing(e); dep != "" {
		attrs = append(attrs, slog.String("needs", dep))
		if reason != nil {
			attrs = append(attrs, slog.Any("reason", reason))
		}
		r.d.log.Error("config entry skipped: "+cause, attrs...)
		return
	}
	r.d.log.Error("config entry failed; skipped", append(attrs, slog.Any("err", err))...)
}

// missing finds a bdev that entry e needs and that the replay could not
// provide, and says why: its create entry failed, or it is an OCF vbdev
// that failed to start or still waits for a base bdev.
func (r *replay) missing(e entry) (dep, cause string, reason error) {
	for _, dep := range e.deps() {
		if err, ok := r.notCreated[dep]; ok {
			if in, gerr := r.d.ocf.Get(dep); gerr == nil && in.State == vbdev.StateFailed {
				return dep, fmt.Sprintf("OCF vbdev %q failed to start", dep), in.Err
			}
			return dep, fmt.Sprintf("bdev %q was not created", dep), err
		}
		in, err := r.d.ocf.Get(dep)
		if err != nil {
			continue
		}
		switch in.State {
		case vbdev.StateFailed:
			return dep, fmt.Sprintf("OCF vbdev %q failed to start", dep), in.Err
		case vbdev.StateWaiting:
			kind, base := "cache", in.CacheBdev
			if in.CacheAttached {
				kind, base = "core", in.CoreBdev
			}
			return dep, fmt.Sprintf("OCF vbdev %q is waiting for its %s bdev %q", dep, kind, base), r.notCreated[base]
		}
	}
	return "", "", nil
}

// failedVolumes names the OCF vbdevs left failed, for the summary line.
func (r *replay) failedVolumes() []string {
	var out []string
	for _, in := range r.d.ocf.List("") {
		if in.State == vbdev.StateFailed {
			out = append(out, in.Name)
		}
	}
	return out
}

// entry is a config entry with its params decoded, to find the bdev names
// it creates and refers to.
type entry struct {
	method string
	params map[string]any
}

func parseEntry(m Method) entry {
	e := entry{method: m.Method}
	json.Unmarshal(m.Params, &e.params) //nolint:errcheck // params that are not an object name nothing
	return e
}

func (e entry) isCreate() bool {
	return strings.HasSuffix(e.method, "_create") || strings.HasPrefix(e.method, "construct_")
}

func (e entry) str(key string) string {
	s, _ := e.params[key].(string)
	return s
}

// created is the name of the bdev the entry creates, if it is a create.
func (e entry) created() string {
	if !e.isCreate() {
		return ""
	}
	return e.str("name")
}

// subject is the name the entry is about: the bdev it creates, or the
// bdev it acts on (a policy's vbdev, an export's bdev).
func (e entry) subject() string {
	for _, k := range []string{"name", "bdev_name", "base_name"} {
		if s := e.str(k); s != "" {
			return s
		}
	}
	return ""
}

// deps are the names of the bdevs the entry needs, sorted: its params
// naming a bdev (bdev_name, *_bdev_name, base_name), and the name it acts
// on when it is not a create.
func (e entry) deps() []string {
	var out []string
	for k := range e.params {
		s := e.str(k)
		if s == "" {
			continue
		}
		if k == "bdev_name" || strings.HasSuffix(k, "_bdev_name") || k == "base_name" || (k == "name" && !e.isCreate()) {
			out = append(out, s)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}
