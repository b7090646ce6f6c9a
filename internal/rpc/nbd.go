package rpc

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"sync"
	"syscall"

	"blockcache/internal/bdev"
	"blockcache/internal/jsonrpc"
	"blockcache/internal/nbd"
)

// exportInfo is one started NBD export.
type exportInfo struct {
	bdevName string
	device   string // what nbd_start_disk returned: the nbd:// URI
	readOnly bool   // writes, trims and write-zeroes fail with EPERM
	claim    *bdev.Claim
}

// exportTable holds the exports in start order.
type exportTable struct {
	mu      sync.Mutex
	exports []*exportInfo
}

func newExportTable() *exportTable { return &exportTable{} }

func (t *exportTable) find(device string) *exportInfo {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, e := range t.exports {
		if e.device == device {
			return e
		}
	}
	return nil
}

// take removes e if still present and reports whether it was.
func (t *exportTable) take(e *exportInfo) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := len(t.exports)
	t.exports = slices.DeleteFunc(t.exports, func(x *exportInfo) bool { return x == e })
	return len(t.exports) < n
}

func (t *exportTable) list() []*exportInfo {
	t.mu.Lock()
	defer t.mu.Unlock()
	return slices.Clone(t.exports)
}

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

func (a *API) nbdStartDisk(_ context.Context, params json.RawMessage) (any, error) {
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
	dev, err := a.svc.Registry.Lookup(p.BdevName)
	if err != nil {
		return nil, errnoReply(err)
	}
	e := &exportInfo{bdevName: dev.Info().Name, device: a.svc.NBDURI(dev.Info().Name), readOnly: p.ReadOnly}
	if a.exports.find(e.device) != nil {
		// The export is named after the bdev, so its "nbd device" is in
		// use: SPDK's answer for a busy /dev/nbdX.
		return nil, jsonrpc.ErrnoError(syscall.EBUSY).WithData("%s is already exported as %s", e.bdevName, e.device)
	}
	claim, err := a.svc.Registry.Claim(e.bdevName, "nbd", func() { a.stopExport(e) })
	if err != nil {
		return nil, errnoReply(err)
	}
	e.claim = claim
	ex := nbd.Export{Name: e.bdevName, Description: dev.Info().ProductName, Device: dev, ReadOnly: p.ReadOnly}
	if in, err := a.svc.OCF.Get(e.bdevName); err == nil && in.Started {
		ex.PreferredBlockSize = uint32(in.LineSizeKiB * 1024)
		ex.Description = "blockcache " + in.Mode + " volume " + in.Name
	}
	if err := a.svc.NBD.AddExport(ex); err != nil {
		claim.Release()
		return nil, errnoReply(err)
	}
	a.exports.mu.Lock()
	a.exports.exports = append(a.exports.exports, e)
	a.exports.mu.Unlock()
	a.svc.Log.Info("nbd export started", "bdev", e.bdevName, "uri", e.device, "readonly", e.readOnly)
	return e.device, nil
}

// stopExport ends an export: clients are disconnected once their in-flight
// requests finish, then the bdev is released. It is also the hot-remove
// callback of the export's claim.
func (a *API) stopExport(e *exportInfo) {
	if !a.exports.take(e) {
		return
	}
	if err := a.svc.NBD.RemoveExport(e.bdevName); err != nil {
		a.svc.Log.Warn("nbd remove export", "bdev", e.bdevName, "err", err)
	}
	e.claim.Release()
	a.svc.Log.Info("nbd export stopped", "bdev", e.bdevName, "uri", e.device)
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
}

type nbdDiskObject struct {
	NBDDevice string `json:"nbd_device"`
	BdevName  string `json:"bdev_name"`
}

func (a *API) nbdGetDisks(_ context.Context, params json.RawMessage) (any, error) {
	var p nbdGetParams
	if err := jsonrpc.DecodeParams(params, &p, errDecode); err != nil {
		return nil, err
	}
	out := []nbdDiskObject{}
	for _, e := range a.exports.list() {
		if p.NBDDevice == "" || p.NBDDevice == e.device {
			out = append(out, nbdDiskObject{NBDDevice: e.device, BdevName: e.bdevName})
		}
	}
	if p.NBDDevice != "" && len(out) == 0 {
		return nil, jsonrpc.ErrnoError(syscall.ENODEV).WithData("no export started as %q", p.NBDDevice)
	}
	return out, nil
}

// nbdConfig returns the nbd subsystem's config entries.
func (a *API) nbdConfig() []configEntry {
	var out []configEntry
	for _, e := range a.exports.list() {
		out = append(out, configEntry{Method: "nbd_start_disk", Params: nbdStartParams{BdevName: e.bdevName, NBDDevice: e.device, ReadOnly: e.readOnly}})
	}
	return out
}

// StopExports ends every export (daemon shutdown).
func (a *API) StopExports() {
	for _, e := range a.exports.list() {
		a.stopExport(e)
	}
}
