package rpc

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"syscall"

	"github.com/google/uuid"

	"blockcache/internal/bdev"
	"blockcache/internal/bdev/errinj"
	"blockcache/internal/jsonrpc"
)

// configEntry is one {method, params} element of framework_get_config.
type configEntry struct {
	Method string `json:"method"`
	Params any    `json:"params,omitempty"`
}

// baseBdev is a bdev created by one of the base modules (malloc, aio, null,
// delay, error), remembered so it can be deleted by its module's method and
// written back by framework_get_config.
type baseBdev struct {
	name   string
	module string // "malloc", "aio", ...
	dev    bdev.Device
	// config returns the create entry that re-creates the bdev.
	config func() configEntry
	// driverSpecific returns bdev_get_bdevs' driver_specific, or nil.
	driverSpecific func() any
	// claim is held on the base bdev of a wrapper (delay, error).
	claim *bdev.Claim
	// deps name the bdevs it is built on (a wrapper's base), which its
	// config entry must follow.
	deps []string
	// injector arms the faults of an error bdev.
	injector *errinj.SPDKInjector
}

// baseTable holds the base bdevs in creation order.
type baseTable struct {
	mu    sync.Mutex
	bdevs []*baseBdev
	// nextAuto numbers auto-named bdevs per prefix, as SPDK's counters.
	nextAuto map[string]int
}

func newBaseTable() *baseTable { return &baseTable{nextAuto: map[string]int{}} }

func (t *baseTable) add(b *baseBdev) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.bdevs = append(t.bdevs, b)
}

func (t *baseTable) get(name string) *baseBdev {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, b := range t.bdevs {
		if b.name == name {
			return b
		}
	}
	return nil
}

func (t *baseTable) remove(b *baseBdev) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.bdevs = slices.DeleteFunc(t.bdevs, func(x *baseBdev) bool { return x == b })
}

func (t *baseTable) list() []*baseBdev {
	t.mu.Lock()
	defer t.mu.Unlock()
	return slices.Clone(t.bdevs)
}

// autoName returns prefix<N> for the lowest N not yet handed out that names
// no registered bdev.
func (t *baseTable) autoName(reg *bdev.Registry, prefix string) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	for {
		n := t.nextAuto[prefix]
		t.nextAuto[prefix] = n + 1
		name := fmt.Sprintf("%s%d", prefix, n)
		if _, err := reg.Lookup(name); err != nil {
			return name
		}
	}
}

// parseUUID parses an optional uuid parameter.
func parseUUID(s string) (uuid.UUID, error) {
	if s == "" {
		return uuid.Nil, nil
	}
	id, err := uuid.Parse(s)
	if err != nil {
		return uuid.Nil, jsonrpc.ErrnoError(syscall.EINVAL).WithData("uuid %q: %v", s, err)
	}
	return id, nil
}

// ramBdevUUID checks what bdev_malloc_create and bdev_null_create ask for
// beyond a size: metadata and DIF, which neither supports, and an optional
// uuid, which it returns.
func ramBdevUUID(mdSize uint32, difType int32, id string) (uuid.UUID, error) {
	if mdSize != 0 || difType != 0 {
		return uuid.Nil, jsonrpc.ErrnoError(syscall.EINVAL).WithData("metadata and DIF (md_size, dif_type) are not supported")
	}
	return parseUUID(id)
}

// fixedConfig is the config of a base bdev whose create entry does not
// change after creation.
func fixedConfig(method string, params any) func() configEntry {
	return func() configEntry { return configEntry{Method: method, Params: params} }
}

// created registers a new base bdev (see registerBase) and returns its
// name, the answer of its create method.
func (a *API) created(b *baseBdev) (any, error) {
	if err := a.registerBase(b); err != nil {
		return nil, err
	}
	return b.name, nil
}

// register registers a new base bdev's device and records it; on failure
// the device is closed.
func (a *API) registerBase(b *baseBdev) error {
	if err := a.svc.Registry.Register(b.dev); err != nil {
		b.dev.Close()
		return errnoReply(err)
	}
	a.bases.add(b)
	a.svc.Log.Info("bdev created", "name", b.name, "module", b.module, "block_size", b.dev.Info().BlockSize, "num_blocks", b.dev.Info().NumBlocks)
	return nil
}

type deleteParams struct {
	Name string `json:"name" rpc:"required"`
}

// deleteBase is the delete method of a base module: the bdev is
// unregistered (its claim holder, e.g. an OCF vbdev, is hot-removed first),
// then closed.
func (a *API) deleteBase(module string) handler {
	return func(_ context.Context, params json.RawMessage) (any, error) {
		var p deleteParams
		if err := jsonrpc.DecodeParams(params, &p, errDecode); err != nil {
			return nil, err
		}
		b := a.bases.get(p.Name)
		if b == nil || b.module != module {
			return nil, jsonrpc.ErrnoError(syscall.ENODEV).WithData("no %s bdev named %q", module, p.Name)
		}
		done := a.deleting(b.name)
		err := a.removeBase(b, "deleted")
		done(err == nil)
		if err != nil {
			return nil, errnoReply(err)
		}
		a.dropForgotten()
		return true, nil
	}
}

// removeBase unregisters a base bdev (its claim holder is hot-removed
// first), closes it and releases what it claimed.
func (a *API) removeBase(b *baseBdev, why string) error {
	dev, err := a.svc.Registry.Unregister(b.name)
	if err != nil {
		return err
	}
	a.bases.remove(b)
	if err := dev.Close(); err != nil {
		a.svc.Log.Warn("close removed bdev", "name", b.name, "err", err)
	}
	if b.claim != nil {
		b.claim.Release()
	}
	a.svc.Log.Info("bdev removed", "name", b.name, "module", b.module, "why", why)
	return nil
}
