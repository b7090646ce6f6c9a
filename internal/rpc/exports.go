package rpc

import (
	"slices"
	"sync"

	"blockcache/internal/bdev"
)

// exportInfo is one export of the table: started (serving on the NBD
// server, its bdev claimed) or pending (its bdev absent: not created yet
// at start-up, or hot-removed), in which case it starts by itself when a
// bdev of its name registers. bdevName, device and readOnly are
// immutable; the rest is guarded by exportTable.mu.
type exportInfo struct {
	bdevName string
	device   string // what nbd_start_disk returned: the nbd:// URI
	readOnly bool   // writes, trims and write-zeroes fail with EPERM

	// sess is the started export's session; nil while pending or starting.
	sess *exportSession
	// pending says why the export waits for its bdev; "" once started.
	pending string
	// starting is set while one goroutine starts the export, so that no
	// other does.
	starting bool
	// onOCF is set once the export served an OCF vbdev: a pending export
	// of a vbdev the OCF module no longer knows ends (dropForgotten).
	onOCF bool
}

// exportSession is one start of an export: the claim on its bdev, and
// whether the bdev went away (the claim's hot-remove callback ran), which
// may happen before the start completes. gone is guarded by
// exportTable.mu.
type exportSession struct {
	claim *bdev.Claim
	ocf   bool // the bdev is an OCF vbdev
	gone  bool
}

// exportTable holds the exports, started and pending, in start order. An
// export's device (its URI, derived from the bdev name) is unique in it.
type exportTable struct {
	mu      sync.Mutex
	exports []*exportInfo
	// deleting counts the delete methods running per bdev name. An
	// export whose bdev goes away while its name is deleted turns pending
	// with pendingDeleting, and no pending export of the name starts
	// until the last of those deletes ends: it ends the exports when it
	// succeeded, else starts them again (markDeleting).
	deleting map[string]int
	// closed is set at shutdown: nothing starts or turns pending after.
	closed bool
	// workers are the goroutines starting pending exports whose bdev
	// arrived, or checking whether a pending export's vbdev is gone; each
	// is added under mu while not closed.
	workers sync.WaitGroup
}

func newExportTable() *exportTable { return &exportTable{deleting: map[string]int{}} }

// pendingDeleting is why an export whose bdev a delete method removed
// waits for the delete's outcome.
const pendingDeleting = "its bdev is being deleted"

func (t *exportTable) find(device string) *exportInfo {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.findLocked(device)
}

// view returns a copy of the state of the export of device, or nil.
func (t *exportTable) view(device string) *exportView {
	t.mu.Lock()
	defer t.mu.Unlock()
	if e := t.findLocked(device); e != nil {
		return &exportView{e: e, pending: e.pending}
	}
	return nil
}

func (t *exportTable) findLocked(device string) *exportInfo {
	for _, e := range t.exports {
		if e.device == device {
			return e
		}
	}
	return nil
}

// add appends e, about to start (or pending when e.pending is set),
// unless the table holds an export of the same device: then it returns a
// copy of that one's state.
func (t *exportTable) add(e *exportInfo) (other *exportView) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if o := t.findLocked(e.device); o != nil {
		return &exportView{e: o, pending: o.pending}
	}
	e.starting = e.pending == ""
	t.exports = append(t.exports, e)
	return nil
}

// take removes e if still present and returns its session, nil when it
// was pending; ok reports whether it was present.
func (t *exportTable) take(e *exportInfo) (s *exportSession, ok bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := len(t.exports)
	t.exports = slices.DeleteFunc(t.exports, func(x *exportInfo) bool { return x == e })
	s, e.sess = e.sess, nil
	return s, len(t.exports) < n
}

// beginStart reports whether the caller may start e, a pending export
// still in the table that nobody is starting and whose bdev no delete
// method is deleting; if so e is marked starting.
func (t *exportTable) beginStart(e *exportInfo) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed || e.pending == "" || e.starting || t.deleting[e.bdevName] > 0 || !slices.Contains(t.exports, e) {
		return false
	}
	e.starting = true
	return true
}

// activate records s as e's session once its NBD export was added. It
// fails, leaving e as it was but no longer starting, when e was stopped
// meanwhile or s's bdev went away; the caller then undoes the start.
func (t *exportTable) activate(e *exportInfo, s *exportSession) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	e.starting = false
	if s.gone || t.closed || !slices.Contains(t.exports, e) {
		return false
	}
	e.sess, e.pending = s, ""
	e.onOCF = e.onOCF || s.ocf
	return true
}

// abandon ends a start that failed: e stays pending if it was, with why
// unless that is empty, or leaves the table if it was a new export.
func (t *exportTable) abandon(e *exportInfo, why string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e.starting = false
	if e.pending == "" {
		t.exports = slices.DeleteFunc(t.exports, func(x *exportInfo) bool { return x == e })
		return
	}
	if why != "" {
		e.pending = why
	}
}

// gone handles s's bdev going away. It returns ok false when s is not
// e's current session (the start has not completed, and will be undone).
// Otherwise e loses its session and turns pending, pending saying why:
// pendingDeleting when a delete method is deleting its bdev (the delete's
// end decides what becomes of e), else why. When the table is closed e
// leaves it instead, and pending is "". check reports that a worker was
// added to check whether the OCF vbdev is gone.
func (t *exportTable) gone(e *exportInfo, s *exportSession, why string) (ok bool, pending string, check bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	s.gone = true
	if e.sess != s {
		return false, "", false
	}
	e.sess = nil
	switch {
	case t.closed:
		t.exports = slices.DeleteFunc(t.exports, func(x *exportInfo) bool { return x == e })
		return true, "", false
	case t.deleting[e.bdevName] > 0:
		e.pending = pendingDeleting
		return true, e.pending, false
	}
	e.pending = why
	if s.ocf {
		t.workers.Add(1)
	}
	return true, why, s.ocf
}

// ocfPending returns the pending exports that served an OCF vbdev.
func (t *exportTable) ocfPending() []*exportInfo {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []*exportInfo
	for _, e := range t.exports {
		if e.onOCF && e.sess == nil && e.pending != "" && !e.starting {
			out = append(out, e)
		}
	}
	return out
}

// dropPending removes e if it is still pending, not being started, and no
// delete of its bdev runs (that delete's outcome ends it: markDeleting).
func (t *exportTable) dropPending(e *exportInfo) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if e.sess != nil || e.pending == "" || e.starting || t.deleting[e.bdevName] > 0 {
		return false
	}
	n := len(t.exports)
	t.exports = slices.DeleteFunc(t.exports, func(x *exportInfo) bool { return x == e })
	return len(t.exports) < n
}

// markDeleting records that name's delete method runs. The returned
// function ends that. If the delete succeeded it removes the pending
// exports of name and returns them as they were (ended; pendingDeleting
// says the delete stopped one). If it failed and no other delete of name
// runs, it returns the pending exports of name to start again (retry),
// with a worker added for each: the bdev a failed delete removed may be
// back (bdev_ocf_delete re-registers the volume it could not delete).
// Those the delete stopped wait, if their bdev is not back, as for a
// hot-removed bdev.
func (t *exportTable) markDeleting(name string) (done func(deleted bool) (ended []exportView, retry []*exportInfo)) {
	t.mu.Lock()
	t.deleting[name]++
	t.mu.Unlock()
	return func(deleted bool) (ended []exportView, retry []*exportInfo) {
		t.mu.Lock()
		defer t.mu.Unlock()
		if t.deleting[name]--; t.deleting[name] == 0 {
			delete(t.deleting, name)
		}
		if deleted {
			t.exports = slices.DeleteFunc(t.exports, func(e *exportInfo) bool {
				drop := e.bdevName == name && e.sess == nil
				if drop {
					ended = append(ended, exportView{e: e, pending: e.pending})
				}
				return drop
			})
			return ended, nil
		}
		if t.closed || t.deleting[name] > 0 {
			return nil, nil
		}
		for _, e := range t.exports {
			if e.bdevName != name || e.pending == "" || e.starting {
				continue
			}
			if e.pending == pendingDeleting {
				e.pending = "its bdev was removed by a delete that failed"
			}
			retry = append(retry, e)
			t.workers.Add(1)
		}
		return nil, retry
	}
}

// waiting returns the pending exports whose bdev is called by one of
// names, not being started nor deleted, with a worker added for each.
func (t *exportTable) waiting(names []string) []*exportInfo {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []*exportInfo
	for _, e := range t.exports {
		if !t.closed && e.pending != "" && !e.starting && t.deleting[e.bdevName] == 0 && slices.Contains(names, e.bdevName) {
			out = append(out, e)
			t.workers.Add(1)
		}
	}
	return out
}

// addWorker adds a worker unless the table is closed.
func (t *exportTable) addWorker() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.closed {
		t.workers.Add(1)
	}
	return !t.closed
}

// exportView is a copy of an export's state, for listings.
type exportView struct {
	e       *exportInfo
	pending string // "" when started
}

func (t *exportTable) list() []exportView {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]exportView, 0, len(t.exports))
	for _, e := range t.exports {
		v := exportView{e: e, pending: e.pending}
		if e.sess == nil && v.pending == "" {
			continue // a new export still starting
		}
		out = append(out, v)
	}
	return out
}

// close stops every start and turn to pending; it waits for the workers
// running.
func (t *exportTable) close() {
	t.mu.Lock()
	t.closed = true
	t.mu.Unlock()
	t.workers.Wait()
}
