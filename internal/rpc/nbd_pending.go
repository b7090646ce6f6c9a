package rpc

import (
	"errors"
	"fmt"

	"github.com/google/uuid"

	"blockcache/internal/bdev"
	"blockcache/internal/vbdev"
)

// Pending exports (docs/remote.md, "Exports of absent bdevs"): an export
// whose bdev is absent stays in the export table and in the config, and
// starts by itself when a bdev of its name registers. An export turns
// pending when the start-up config starts it before its bdev exists, or
// when its bdev is hot-removed; it ends for good with nbd_stop_disk or a
// delete method of its bdev that succeeds.

// addPending adds the start-up export p, whose bdev does not exist yet,
// as pending.
func (a *API) addPending(p nbdStartParams) (any, error) {
	why := a.absentReason(p.BdevName)
	e := &exportInfo{bdevName: p.BdevName, device: a.svc.NBDURI(p.BdevName), readOnly: p.ReadOnly, pending: why}
	if other := a.exports.add(e); other != nil {
		return nil, errExportBusy(other)
	}
	a.svc.Log.Warn("nbd export pending: its bdev does not exist yet; the export starts when a bdev of that name registers",
		"bdev", e.bdevName, "uri", e.device, "reason", why)
	// The bdev may have registered since the lookup, before the export
	// was in the table for onBdevEvent to see.
	if a.exports.addWorker() {
		a.startPending(e)
	}
	return e.device, nil
}

// absentReason says why the bdev called name, which is not registered,
// is absent: an OCF vbdev of that name waiting for a base bdev or failed
// to start, or no such bdev yet.
func (a *API) absentReason(name string) string {
	in, err := a.svc.OCF.Get(name)
	switch {
	case err != nil, in.State == vbdev.StateStarted:
		return "its bdev does not exist yet"
	case in.State == vbdev.StateFailed:
		return fmt.Sprintf("OCF vbdev %q failed to start: %v", name, in.Err)
	case in.CacheAttached:
		return fmt.Sprintf("OCF vbdev %q is waiting for its core bdev %q", name, in.CoreBdev)
	}
	return fmt.Sprintf("OCF vbdev %q is waiting for its cache bdev %q", name, in.CacheBdev)
}

// onBdevEvent starts the pending exports of a bdev that registered. The
// starts run on their own goroutines: events may be delivered under the
// OCF manager's lock (a volume registering), which starting an export
// takes.
func (a *API) onBdevEvent(ev bdev.Event) {
	if ev.Kind != bdev.EventAdded {
		return
	}
	names := []string{ev.Name}
	if id := ev.Device.Info().UUID; id != uuid.Nil {
		names = append(names, id.String())
	}
	for _, e := range a.exports.waiting(names) {
		go a.startPending(e)
	}
}

// startPending starts e if it is pending and its bdev exists; else e
// stays pending. It marks a worker done.
func (a *API) startPending(e *exportInfo) {
	defer a.exports.workers.Done()
	if !a.exports.beginStart(e) {
		return
	}
	dev, err := a.svc.Registry.Lookup(e.bdevName)
	if err != nil {
		a.exports.abandon(e, "")
		return
	}
	if err := a.startExport(e, dev); err != nil {
		a.exports.abandon(e, "its bdev is back but the export could not start: "+err.Error())
		a.svc.Log.Warn("nbd export pending: its bdev registered but the export could not start; it is tried again when a bdev of that name registers",
			"bdev", e.bdevName, "uri", e.device, "err", err)
		return
	}
	a.svc.Log.Info("nbd export started: its bdev registered", "bdev", e.bdevName, "uri", e.device, "readonly", e.readOnly || dev.Info().ReadOnly)
}

// dropForgotten ends the pending exports of OCF vbdevs that the OCF
// module no longer knows: a cache hot-remove takes its vbdevs with it,
// waiting ones included, as a delete would. It takes the OCF manager's
// lock: never call it from a registry event or claim callback.
func (a *API) dropForgotten() {
	for _, e := range a.exports.ocfPending() {
		if _, err := a.svc.OCF.Get(e.bdevName); !errors.Is(err, vbdev.ErrNoSuchVbdev) {
			continue
		}
		if a.exports.dropPending(e) {
			a.svc.Log.Info("nbd export stopped while pending: its OCF vbdev is gone (its cache bdev was removed)", "bdev", e.bdevName, "uri", e.device)
		}
	}
}

// deleting wraps the delete of the bdev called name. An export of it
// that the delete stops waits, pending, for the delete's outcome: once
// the delete succeeded it ends, as do the exports of name that were
// pending already; if it failed, the exports of name start again if
// their bdev is back (a failed bdev_ocf_delete re-registers its volume),
// else stay pending. Call the returned function with the delete's
// outcome; it does not wait for the starts, so it may be called where
// the OCF manager's lock is held.
func (a *API) deleting(name string) (done func(deleted bool)) {
	end := a.exports.markDeleting(name)
	return func(deleted bool) {
		ended, retry := end(deleted)
		for _, v := range ended {
			if v.pending == pendingDeleting {
				a.svc.Log.Info("nbd export stopped: its bdev was deleted", "bdev", v.e.bdevName, "uri", v.e.device)
			} else {
				a.svc.Log.Info("nbd export stopped while pending: its bdev was deleted", "bdev", v.e.bdevName, "uri", v.e.device)
			}
		}
		for _, e := range retry {
			go a.startPending(e)
		}
	}
}
