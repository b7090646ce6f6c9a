package rpc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"syscall"

	"blockcache/internal/bdev"
	"blockcache/internal/jsonrpc"
	"blockcache/internal/nbd"
)

func (a *API) registerNBD() {
	a.srv.Register("nbd_start_disk", a.mutating(a.nbdStartDisk))
	a.srv.Register("nbd_stop_disk", a.mutating(a.nbdStopDisk))
	a.srv.Register("nbd_get_disks", a.nbdGetDisks)
}

type nbdStartParams struct {
	BdevName  string `json:"bdev_name" rpc:"required"`
	NBDDevice string `json:"nbd_device"`
	// ReadOnly (ours) advertises NBD_FLAG_READ_ONLY and refuses every
	// write, trim and write-zeroes with EPERM.
	ReadOnly bool `json:"readonly,omitempty"`
}

// isKernelNBD reports whether dev names a kernel NBD device node.
func isKernelNBD(dev string) bool { return strings.HasPrefix(dev, "/dev/nbd") }

func (a *API) nbdStartDisk(ctx context.Context, params json.RawMessage) (any, error) {
	var p nbdStartParams
	if err := jsonrpc.DecodeParams(params, &p, errDecode); err != nil {
		return nil, err
	}
	if isKernelNBD(p.NBDDevice) {
		// blockcache never attaches kernel NBD devices, on any host: the
		// reply says so and where the export is reached instead.
		return nil, jsonrpc.Errorf(-int(syscall.ENODEV), "kernel NBD devices are not supported: %s", p.NBDDevice).
			WithData("blockcache exports bdevs over its own NBD server: omit nbd_device, and %s is reached at %s",
				p.BdevName, a.svc.NBDURI(p.BdevName))
	}
	if other := a.exports.view(a.svc.NBDURI(p.BdevName)); other != nil {
		// Also when the bdev is absent: a pending export holds the name.
		return nil, errExportBusy(other)
	}
	dev, err := a.svc.Registry.Lookup(p.BdevName)
	if errors.Is(err, bdev.ErrNoSuchDevice) && atStartup(ctx) {
		return a.addPending(p)
	}
	if err != nil {
		return nil, errnoReply(err)
	}
	name := dev.Info().Name
	e := &exportInfo{bdevName: name, device: a.svc.NBDURI(name), readOnly: p.ReadOnly}
	if other := a.exports.add(e); other != nil {
		return nil, errExportBusy(other)
	}
	if err := a.startExport(e, dev); err != nil {
		a.exports.abandon(e, "")
		return nil, errnoReply(err)
	}
	a.svc.Log.Info("nbd export started", "bdev", e.bdevName, "uri", e.device, "readonly", e.readOnly || dev.Info().ReadOnly)
	return e.device, nil
}

// errExportBusy is the reply to a start whose export name is taken by
// other: the export is named after the bdev, so its "nbd device" is in
// use, SPDK's answer for a busy /dev/nbdX.
func errExportBusy(other *exportView) error {
	if other.pending != "" {
		return jsonrpc.ErrnoError(syscall.EBUSY).WithData("%s is already exported as %s, pending (%s): nbd_stop_disk it first",
			other.e.bdevName, other.e.device, other.pending)
	}
	return jsonrpc.ErrnoError(syscall.EBUSY).WithData("%s is already exported as %s", other.e.bdevName, other.e.device)
}

// startExport claims dev for e, which is marked starting, and adds its
// export to the NBD server. On failure nothing is left claimed or added,
// and e is still starting: the caller abandons it.
func (a *API) startExport(e *exportInfo, dev bdev.Device) error {
	ex := nbd.Export{Name: e.bdevName, Description: dev.Info().ProductName, Device: dev, ReadOnly: e.readOnly}
	s := &exportSession{}
	if in, err := a.svc.OCF.Get(e.bdevName); err == nil && in.Started {
		ex.PreferredBlockSize = uint32(in.LineSizeKiB * 1024)
		ex.Description = "blockcache " + in.Mode + " volume " + in.Name
		s.ocf = true
	}
	claim, err := a.svc.Registry.Claim(e.bdevName, "nbd", func() { a.exportGone(e, s) })
	if err != nil {
		return err
	}
	s.claim = claim
	if err := a.svc.NBD.AddExport(ex); err != nil {
		claim.Release()
		return err
	}
	if !a.exports.activate(e, s) {
		// Stopped meanwhile, or the bdev went away: undo.
		a.closeSession(e, s)
		return fmt.Errorf("export %q: %w", e.bdevName, bdev.ErrNoSuchDevice)
	}
	return nil
}

// closeSession disconnects the export's clients once their in-flight
// requests finish, then releases the bdev.
func (a *API) closeSession(e *exportInfo, s *exportSession) {
	if err := a.svc.NBD.RemoveExport(e.bdevName); err != nil {
		a.svc.Log.Warn("nbd remove export", "bdev", e.bdevName, "err", err)
	}
	s.claim.Release()
}

// stopExport ends an export for good, started or pending.
func (a *API) stopExport(e *exportInfo) {
	s, ok := a.exports.take(e)
	if !ok {
		return
	}
	if s == nil {
		a.svc.Log.Info("nbd export stopped while pending", "bdev", e.bdevName, "uri", e.device)
		return
	}
	a.closeSession(e, s)
	a.svc.Log.Info("nbd export stopped", "bdev", e.bdevName, "uri", e.device)
}

// exportGone is the hot-remove callback of an export's claim: the export
// ends, and stays pending (until the delete's outcome, when its bdev is
// being deleted: see deleting).
func (a *API) exportGone(e *exportInfo, s *exportSession) {
	ok, pending, check := a.exports.gone(e, s, "its bdev was removed")
	if !ok {
		return
	}
	if check {
		// Not here: this may run under the OCF manager's lock.
		go func() {
			defer a.exports.workers.Done()
			a.dropForgotten()
		}()
	}
	a.closeSession(e, s)
	switch pending {
	case "":
		a.svc.Log.Info("nbd export stopped: the daemon is shutting down", "bdev", e.bdevName, "uri", e.device)
		return
	case pendingDeleting:
		return // the delete's end logs what becomes of it
	}
	a.svc.Log.Warn("nbd export pending: its bdev was removed; the export starts again when a bdev of that name registers",
		"bdev", e.bdevName, "uri", e.device)
}

type nbdStopParams struct {
	NBDDevice string `json:"nbd_device" rpc:"required"`
}

func (a *API) nbdStopDisk(_ context.Context, params json.RawMessage) (any, error) {
	var p nbdStopParams
	if err := jsonrpc.DecodeParams(params, &p, errDecode); err != nil {
		return nil, err
	}
	e := a.exports.find(p.NBDDevice)
	if e == nil {
		if isKernelNBD(p.NBDDevice) || strings.HasPrefix(p.NBDDevice, "nbd") {
			return nil, jsonrpc.ErrnoError(syscall.ENODEV).WithData("no export started as %q", p.NBDDevice)
		}
		return nil, jsonrpc.Errorf(-int(syscall.ENODEV), "invalid nbd device").WithData("%q is not an nbd device or URI", p.NBDDevice)
	}
	a.stopExport(e)
	return true, nil
}

type nbdGetParams struct {
	NBDDevice string `json:"nbd_device"`
	// IncludePending (ours) lists the pending exports too.
	IncludePending bool `json:"include_pending,omitempty"`
}

// nbdDiskObject is SPDK's nbd_get_disks entry. State and Pending are
// ours, set with include_pending only, so rpc.py sees SPDK's shape.
type nbdDiskObject struct {
	NBDDevice string `json:"nbd_device"`
	BdevName  string `json:"bdev_name"`
	State     string `json:"state,omitempty"`   // "started" or "pending"
	Pending   string `json:"pending,omitempty"` // why it is pending
}

func (a *API) nbdGetDisks(_ context.Context, params json.RawMessage) (any, error) {
	var p nbdGetParams
	if err := jsonrpc.DecodeParams(params, &p, errDecode); err != nil {
		return nil, err
	}
	out := []nbdDiskObject{}
	pending := ""
	for _, v := range a.exports.list() {
		if p.NBDDevice != "" && p.NBDDevice != v.e.device {
			continue
		}
		o := nbdDiskObject{NBDDevice: v.e.device, BdevName: v.e.bdevName}
		switch {
		case p.IncludePending && v.pending != "":
			o.State, o.Pending = "pending", v.pending
		case p.IncludePending:
			o.State = "started"
		case v.pending != "":
			pending = v.pending
			continue
		}
		out = append(out, o)
	}
	if p.NBDDevice != "" && len(out) == 0 {
		if pending != "" {
			return nil, jsonrpc.ErrnoError(syscall.ENODEV).WithData("the export %q is pending (%s): it starts when its bdev registers", p.NBDDevice, pending)
		}
		return nil, jsonrpc.ErrnoError(syscall.ENODEV).WithData("no export started as %q", p.NBDDevice)
	}
	return out, nil
}

// nbdConfig returns the nbd subsystem's config entries: every export,
// pending ones included, so that a restart starts them again.
func (a *API) nbdConfig() []configEntry {
	var out []configEntry
	for _, v := range a.exports.list() {
		e := v.e
		out = append(out, configEntry{Method: "nbd_start_disk", Params: nbdStartParams{BdevName: e.bdevName, NBDDevice: e.device, ReadOnly: e.readOnly}})
	}
	return out
}

// StopExports ends every export (daemon shutdown): pending ones are
// dropped, and none starts any more.
func (a *API) StopExports() {
	if a.unsubscribe != nil {
		a.unsubscribe()
	}
	a.exports.close()
	for _, v := range a.exports.list() {
		a.stopExport(v.e)
	}
}
