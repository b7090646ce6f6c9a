package rpcclient

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"blockcache/internal/jsonrpc/jsontext"
)

// Messages rpc.py prints or raises while loading a config
// (python/spdk/rpc/config.py).
const (
	// MsgUnknownMethod is load_config's error when the file names a method
	// the server does not have.
	MsgUnknownMethod = "Unknown method was included in the config file"
	// MsgConfigSkipped is what load_config prints when entries were left
	// uncalled because their state had passed; it still succeeds.
	MsgConfigSkipped = "Some configs were skipped because the RPC state that can call them passed over."
	// MsgSubsystemConfigSkipped is load_subsystem_config's version.
	MsgSubsystemConfigSkipped = "Some configs were skipped because they cannot be called in the current RPC state."
)

// ErrUnknownMethod is returned by LoadConfig for MsgUnknownMethod.
//
//lint:ignore ST1005 rpc.py's exact words
var ErrUnknownMethod = errors.New(MsgUnknownMethod)

// getConfigParams are the params rpc.py HEAD sends to framework_get_config
// from save_config, in its order.
type getConfigParams struct {
	Name        string `json:"name"`
	WithBatches bool   `json:"with_batches"`
}

// SaveConfig is rpc.py's save_config: framework_get_subsystems, then
// framework_get_config {"name": S, "with_batches": false} for each
// subsystem in the order listed, and returns the file rpc.py writes:
// {"subsystems": [{"subsystem": S, "config": [...]}, ...]} as Python's
// json.dump with indent=2, plus a newline.
//
// With subsystems given (rpc.py's -s a,b), only those and the subsystems
// they depend on, transitively, are saved; the order is still the server's.
func (c *Client) SaveConfig(subsystems ...string) ([]byte, error) {
	raw, err := c.Call("framework_get_subsystems", nil)
	if err != nil {
		return nil, err
	}
	var list []struct {
		Subsystem string   `json:"subsystem"`
		DependsOn []string `json:"depends_on"`
	}
	if err := json.Unmarshal(raw, &list); err != nil {
		return nil, fmt.Errorf("framework_get_subsystems: unexpected result: %w", err)
	}
	// Every subsystem's full set of dependencies, itself included. A
	// subsystem only depends on ones listed before it (init order).
	deps := map[string]map[string]bool{}
	for _, s := range list {
		set := map[string]bool{s.Subsystem: true}
		for _, d := range s.DependsOn {
			dd, ok := deps[d]
			if !ok {
				return nil, fmt.Errorf("save_config: subsystem %q depends on %q, which is not listed before it", s.Subsystem, d)
			}
			for x := range dd {
				set[x] = true
			}
		}
		deps[s.Subsystem] = set
	}
	want := map[string]bool{}
	for _, s := range subsystems {
		set, ok := deps[s]
		if !ok {
			return nil, fmt.Errorf("save_config: no subsystem %q", s)
		}
		for x := range set {
			want[x] = true
		}
	}

	out := []byte(`{"subsystems":[`)
	n := 0
	for _, s := range list {
		if len(subsystems) > 0 && !want[s.Subsystem] {
			continue
		}
		cfg, err := c.Call("framework_get_config", getConfigParams{Name: s.Subsystem})
		if err != nil {
			return nil, err
		}
		if n > 0 {
			out = append(out, ',')
		}
		n++
		out = subsystemEntry(out, s.Subsystem, cfg)
	}
	out = append(out, "]}"...)
	return dumpFile(out)
}

// SaveSubsystemConfig is rpc.py's save_subsystem_config -n name: it prints
// {"subsystem": name, "config": <framework_get_config result>}.
func (c *Client) SaveSubsystemConfig(name string) ([]byte, error) {
	cfg, err := c.Call("framework_get_config", map[string]any{"name": name})
	if err != nil {
		return nil, err
	}
	return dumpFile(subsystemEntry(nil, name, cfg))
}

func subsystemEntry(dst []byte, name string, cfg json.RawMessage) []byte {
	dst = append(dst, `{"subsystem":`...)
	dst = jsontext.AppendString(dst, name, jsontext.Python)
	dst = append(dst, `,"config":`...)
	dst = append(dst, cfg...)
	return append(dst, '}')
}

// dumpFile formats as rpc.py's json_dump: indent 2 and a final newline.
func dumpFile(compact []byte) ([]byte, error) {
	b, err := Indent(compact)
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// configEntry is one {"method": ..., "params": ...} element of a config.
type configEntry struct {
	method string
	params json.RawMessage // nil when absent
}

type configSubsystem struct {
	name    string
	entries []configEntry
}

// parseConfig reads a config file the way load_config uses it, keeping
// only subsystems with a non-empty config. An entry without a string
// "method" has method "" and is rejected as unknown later, as in rpc.py.
func parseConfig(configJSON []byte) ([]configSubsystem, error) {
	var file struct {
		Subsystems *[]map[string]json.RawMessage `json:"subsystems"`
	}
	if err := json.Unmarshal(configJSON, &file); err != nil {
		return nil, fmt.Errorf("load_config: %w", err)
	}
	if file.Subsystems == nil {
		return nil, errors.New(`load_config: the config has no "subsystems" list`)
	}
	var subs []configSubsystem
	for i, s := range *file.Subsystems {
		rawCfg, ok := s["config"]
		if !ok {
			return nil, fmt.Errorf(`load_config: subsystem %d has no "config"`, i)
		}
		var name string
		json.Unmarshal(s["subsystem"], &name) //nolint:errcheck // only for messages
		var elems []map[string]json.RawMessage
		if err := json.Unmarshal(rawCfg, &elems); err != nil {
			return nil, fmt.Errorf("load_config: subsystem %q: config is not a list of objects: %w", name, err)
		}
		if len(elems) == 0 {
			continue // rpc.py drops subsystems with no config
		}
		sub := configSubsystem{name: name}
		for _, e := range elems {
			var ent configEntry
			if m, ok := e["method"]; ok {
				json.Unmarshal(m, &ent.method) //nolint:errcheck // non-strings stay "", i.e. unknown
			}
			for k, v := range e {
				switch k {
				case "method":
				case "params":
					if string(v) != "null" {
						ent.params = v
					}
				default:
					// rpc.py: client.call(**elem) raises TypeError.
					return nil, fmt.Errorf("load_config: %s entry has unexpected key %q", ent.method, k)
				}
			}
			sub.entries = append(sub.entries, ent)
		}
		subs = append(subs, sub)
	}
	return subs, nil
}

// rpcGetMethodsParams are rpc_get_methods' params as load_config sends them:
// include_aliases always (false), current only in the loop.
type rpcGetMethodsParams struct {
	Current        *bool `json:"current,omitempty"`
	IncludeAliases bool  `json:"include_aliases"`
}

func (c *Client) methods(params any) ([]string, error) {
	raw, err := c.Call("rpc_get_methods", params)
	if err != nil {
		return nil, err
	}
	var names []string
	if err := json.Unmarshal(raw, &names); err != nil {
		return nil, fmt.Errorf("rpc_get_methods: unexpected result: %w", err)
	}
	return names, nil
}

// LoadConfig is rpc.py's load_config, step for step:
//
//  1. drop subsystems whose config is empty;
//  2. rpc_get_methods {"include_aliases": false}; if no subsystem is left
//     and framework_start_init is listed, call it and stop;
//  3. fail with ErrUnknownMethod if any entry's method is not listed;
//  4. repeat while entries remain: rpc_get_methods {"current": true,
//     "include_aliases": false}; call, in file order, every remaining entry
//     whose method is listed (params sent as written); then call
//     framework_start_init if it is listed; stop when a round called
//     nothing.
//
// An error reply aborts the load with that error. Entries whose state has
// passed (e.g. startup-only methods once running) are left uncalled and
// returned as skipped, without error: rpc.py prints MsgConfigSkipped and
// exits 0.
func (c *Client) LoadConfig(configJSON []byte) (skipped []string, err error) {
	subs, err := parseConfig(configJSON)
	if err != nil {
		return nil, err
	}
	known, err := c.methods(rpcGetMethodsParams{})
	if err != nil {
		return nil, err
	}
	if len(subs) == 0 {
		if slices.Contains(known, "framework_start_init") {
			_, err := c.Call("framework_start_init", nil)
			return nil, err
		}
		return nil, nil
	}
	for _, s := range subs {
		for _, e := range s.entries {
			if e.method == "" || !slices.Contains(known, e.method) {
				return nil, fmt.Errorf("%w: %q", ErrUnknownMethod, e.method)
			}
		}
	}

	current := true
	for len(subs) > 0 {
		allowed, err := c.methods(rpcGetMethodsParams{Current: &current})
		if err != nil {
			return nil, err
		}
		called := false
		remaining := subs[:0]
		for _, s := range subs {
			left := s.entries[:0]
			for _, e := range s.entries {
				if !slices.Contains(allowed, e.method) {
					left = append(left, e)
					continue
				}
				if _, err := c.CallRaw(e.method, e.params); err != nil {
					return nil, err
				}
				called = true
			}
			if s.entries = left; len(left) > 0 {
				remaining = append(remaining, s)
			}
		}
		subs = remaining
		if slices.Contains(allowed, "framework_start_init") {
			if _, err := c.Call("framework_start_init", nil); err != nil {
				return nil, err
			}
			called = true
		}
		if !called {
			break
		}
	}
	for _, s := range subs {
		for _, e := range s.entries {
			skipped = append(skipped, e.method)
		}
	}
	return skipped, nil
}

// LoadSubsystemConfig is rpc.py's load_subsystem_config for one
// {"subsystem": S, "config": [...]} object: check every method against
// rpc_get_methods (no params), then call, once, those listed by
// rpc_get_methods {"current": true}. Entries not callable now are returned
// as skipped (rpc.py prints MsgSubsystemConfigSkipped).
func (c *Client) LoadSubsystemConfig(subsystemJSON []byte) (skipped []string, err error) {
	subs, err := parseConfig(append(append([]byte(`{"subsystems":[`), subsystemJSON...), "]}"...))
	if err != nil {
		return nil, err
	}
	if len(subs) == 0 {
		return nil, nil
	}
	known, err := c.methods(nil)
	if err != nil {
		return nil, err
	}
	for _, e := range subs[0].entries {
		if e.method == "" || !slices.Contains(known, e.method) {
			return nil, fmt.Errorf("%w: %q", ErrUnknownMethod, e.method)
		}
	}
	allowed, err := c.methods(map[string]bool{"current": true})
	if err != nil {
		return nil, err
	}
	for _, e := range subs[0].entries {
		if !slices.Contains(allowed, e.method) {
			skipped = append(skipped, e.method)
			continue
		}
		if _, err := c.CallRaw(e.method, e.params); err != nil {
			return nil, err
		}
	}
	return skipped, nil
}
