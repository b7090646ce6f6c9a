package rpc

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"blockcache/internal/jsonrpc"
)

// SPDK version blockcache's RPC surface follows (rpc.md: SPDK HEAD of Aug
// 2026, v26.05-pre).
const (
	spdkMajor  = 26
	spdkMinor  = 5
	spdkPatch  = 0
	spdkSuffix = "-pre"
)

func (a *API) registerFramework() {
	always := jsonrpc.AllowedIn(jsonrpc.StateStartup | jsonrpc.StateRuntime)
	a.srv.Register("rpc_get_methods", a.srv.GetMethodsHandler(), always)
	a.srv.Register("spdk_get_version", a.getVersion, always)
	a.srv.Register("framework_wait_init", a.waitInit, always)
	a.srv.Register("framework_start_init", a.startInit, jsonrpc.AllowedIn(jsonrpc.StateStartup), jsonrpc.ListedOnlyWhenAllowed())
	a.srv.Register("framework_get_subsystems", a.getSubsystems, always)
	a.srv.Register("framework_get_config", a.getConfig, always)
	a.srv.Register("spdk_kill_instance", a.killInstance, always)
}

func noParams(method string, params json.RawMessage) error {
	if len(params) == 0 || string(params) == "null" {
		return nil
	}
	return jsonrpc.Errorf(jsonrpc.CodeInvalidParams, "%s method requires no parameters", method)
}

type versionFields struct {
	Major  int    `json:"major"`
	Minor  int    `json:"minor"`
	Patch  int    `json:"patch"`
	Suffix string `json:"suffix"`
}

func (a *API) getVersion(_ context.Context, params json.RawMessage) (any, error) {
	if err := noParams("spdk_get_version", params); err != nil {
		return nil, err
	}
	return struct {
		Version string        `json:"version"`
		Fields  versionFields `json:"fields"`
	}{
		Version: fmt.Sprintf("SPDK v%d.%02d%s (blockcache %s)", spdkMajor, spdkMinor, spdkSuffix, a.svc.Version),
		Fields:  versionFields{spdkMajor, spdkMinor, spdkPatch, spdkSuffix},
	}, nil
}

func (a *API) waitInit(_ context.Context, params json.RawMessage) (any, error) {
	if err := noParams("framework_wait_init", params); err != nil {
		return nil, err
	}
	return true, nil
}

func (a *API) startInit(_ context.Context, params json.RawMessage) (any, error) {
	if err := noParams("framework_start_init", params); err != nil {
		return nil, err
	}
	a.srv.SetState(jsonrpc.StateRuntime)
	return true, nil
}

type subsystemObject struct {
	Subsystem string   `json:"subsystem"`
	DependsOn []string `json:"depends_on"`
}

// subsystems are blockcache's, in init order.
var subsystems = []subsystemObject{
	{Subsystem: "bdev", DependsOn: []string{}},
	{Subsystem: "nbd", DependsOn: []string{"bdev"}},
}

func (a *API) getSubsystems(_ context.Context, params json.RawMessage) (any, error) {
	if err := noParams("framework_get_subsystems", params); err != nil {
		return nil, err
	}
	return subsystems, nil
}

type getConfigParams struct {
	Name        string `json:"name" rpc:"required"`
	WithBatches bool   `json:"with_batches"`
}

func (a *API) getConfig(_ context.Context, params json.RawMessage) (any, error) {
	var p getConfigParams
	if err := jsonrpc.DecodeParams(params, &p, errInvalidParams); err != nil {
		return nil, err
	}
	cfg, err := a.SubsystemConfig(p.Name)
	if err != nil {
		return nil, err
	}
	return cfg, nil
}

// SubsystemConfig returns framework_get_config's entries for a subsystem.
func (a *API) SubsystemConfig(name string) ([]configEntry, error) {
	return a.subsystemConfig(name, false)
}

// PersistentConfig returns the entries the daemon persists for a
// subsystem: SubsystemConfig's, plus the OCF vbdevs still waiting for a
// base bdev. framework_get_config leaves those out, as SPDK does, but a
// restart must bring them back, waiting.
func (a *API) PersistentConfig(name string) ([]configEntry, error) {
	return a.subsystemConfig(name, true)
}

func (a *API) subsystemConfig(name string, withWaiting bool) ([]configEntry, error) {
	out := []configEntry{}
	switch name {
	case "bdev":
		var items []configItem
		for _, b := range a.bases.list() {
			items = append(items, configItem{name: b.name, deps: b.deps, entry: b.config()})
		}
		// NBD client bdevs retried since start-up are listed like SPDK's
		// NVMe controllers that are reconnecting.
		items = append(items, a.nbdRetries.configItems(func(name string) bool { return a.bases.get(name) != nil })...)
		items = append(items, a.ocfConfig(withWaiting)...)
		out = append(out, dependencyOrder(items)...)
		out = append(out, configEntry{Method: "bdev_wait_for_examine"})
	case "nbd":
		out = append(out, a.nbdConfig()...)
	default:
		return nil, jsonrpc.Errorf(jsonrpc.CodeInvalidParams, "Subsystem '%s' not found", name)
	}
	return out, nil
}

// configItem is a bdev's create entry with the names of the bdevs it is
// built on.
type configItem struct {
	name  string
	deps  []string
	entry configEntry
}

// dependencyOrder returns the entries of items, in their order except that
// each comes after the entries creating the bdevs it is built on (a delay
// or error bdev over an OCF vbdev, an OCF vbdev over a delay bdev), so that
// replaying them in order succeeds. Dependencies that no item creates are
// ignored.
func dependencyOrder(items []configItem) []configEntry {
	listed := map[string]bool{}
	for _, it := range items {
		listed[it.name] = true
	}
	done := map[string]bool{}
	var out []configEntry
	for len(items) > 0 {
		var rest []configItem
		for _, it := range items {
			ready := true
			for _, d := range it.deps {
				ready = ready && (!listed[d] || done[d])
			}
			if !ready {
				rest = append(rest, it)
				continue
			}
			out = append(out, it.entry)
			done[it.name] = true
		}
		if len(rest) == len(items) { // a cycle cannot be built; keep the order
			for _, it := range rest {
				out = append(out, it.entry)
			}
			break
		}
		items = rest
	}
	return out
}

type killParams struct {
	SigName string `json:"sig_name" rpc:"required"`
}

func (a *API) killInstance(_ context.Context, params json.RawMessage) (any, error) {
	var p killParams
	if err := jsonrpc.DecodeParams(params, &p, errInvalidParams); err != nil {
		return nil, err
	}
	sig := strings.ToUpper(p.SigName)
	if !strings.HasPrefix(sig, "SIG") {
		sig = "SIG" + sig
	}
	switch sig {
	case "SIGINT", "SIGTERM", "SIGQUIT", "SIGHUP", "SIGUSR1", "SIGKILL":
	default:
		return nil, jsonrpc.Errorf(jsonrpc.CodeInvalidParams, "signal type %s is not supported", p.SigName)
	}
	if a.svc.Kill == nil {
		return nil, jsonrpc.Errorf(jsonrpc.CodeInternalError, "spdk_kill_instance is not available")
	}
	if err := a.svc.Kill(sig); err != nil {
		return nil, jsonrpc.Errorf(jsonrpc.CodeInternalError, "%v", err)
	}
	return true, nil
}
