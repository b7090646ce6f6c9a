package jsonrpc

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
)

// State is the framework state a server is in, as SPDK's spdk_rpc_set_state
// sets it. A method is callable when its allowed set contains the current
// state.
type State uint32

const (
	// StateStartup is before framework_start_init (SPDK_RPC_STARTUP): the
	// daemon was started to wait for RPCs and subsystems are not initialized.
	StateStartup State = 1 << iota
	// StateRuntime is after initialization (SPDK_RPC_RUNTIME).
	StateRuntime
)

func (s State) String() string {
	switch s {
	case StateStartup:
		return "startup"
	case StateRuntime:
		return "runtime"
	case StateStartup | StateRuntime:
		return "startup|runtime"
	}
	return fmt.Sprintf("State(%#x)", uint32(s))
}

// Messages of the -32604 error, word for word from SPDK's lib/rpc/rpc.c. The
// first is sent while in StateStartup, the second in any other state.
const (
	MsgNeedsRuntime = "Method may only be called after framework is initialized using framework_start_init RPC."
	MsgNeedsStartup = "Method may only be called before framework is initialized. Use --wait-for-rpc command line parameter and then issue this RPC before the framework_start_init RPC."
)

// Handler runs one method call. params is the request's "params" member
// exactly as received, or nil when it was absent or null (SPDK passes NULL
// then, and methods such as spdk_get_version reject anything else). The
// result is marshalled with encoding/json; return a json.RawMessage to send
// pre-encoded JSON.
//
// Handlers run concurrently for different connections and one at a time per
// connection. ctx is cancelled when the server is closed. A handler that
// panics gets CodeInternalError and the connection stays up.
type Handler func(ctx context.Context, params json.RawMessage) (any, error)

// RegisterOption adjusts a method at registration.
type RegisterOption func(*method)

// AllowedIn sets the states in which the method may be called (SPDK's
// state_mask). The default is StateRuntime, which most SPDK methods use;
// framework_start_init is AllowedIn(StateStartup), and methods such as
// rpc_get_methods are AllowedIn(StateStartup|StateRuntime).
func AllowedIn(states State) RegisterOption {
	return func(m *method) { m.states = states }
}

// ListedOnlyWhenAllowed keeps the method out of every method list (even
// rpc_get_methods without "current") while it is not callable. blockcache
// uses it for framework_start_init: rpc.py's load_config calls
// framework_start_init whenever rpc_get_methods lists it, which on a running
// daemon would fail with -32604 (SPDK lists it regardless).
func ListedOnlyWhenAllowed() RegisterOption {
	return func(m *method) { m.hidden = true }
}

type method struct {
	name    string
	handler Handler
	states  State
	hidden  bool    // unlisted while not allowed
	aliasOf *method // non-nil for a deprecated alias
	warned  bool    // alias deprecation logged; guarded by registry.mu
}

// registry maps method names and aliases to handlers.
type registry struct {
	mu      sync.RWMutex
	methods map[string]*method // methods and aliases by name
}

// Register adds a method. It panics if name is empty or already registered,
// as registering is part of program setup.
func (s *Server) Register(name string, h Handler, opts ...RegisterOption) {
	if name == "" || h == nil {
		panic(fmt.Errorf("jsonrpc: Register(%q): empty name or nil handler", name))
	}
	m := &method{name: name, handler: h, states: StateRuntime}
	for _, o := range opts {
		o(m)
	}
	s.reg.mu.Lock()
	defer s.reg.mu.Unlock()
	if _, dup := s.reg.methods[name]; dup {
		panic(fmt.Errorf("jsonrpc: method %q registered twice", name))
	}
	s.reg.methods[name] = m
}

// RegisterAlias adds a deprecated alias for an already registered method,
// as SPDK's SPDK_RPC_REGISTER_ALIAS_DEPRECATED does (e.g. construct_ocf_bdev
// for bdev_ocf_create). The alias shares the method's handler and states, is
// listed only when aliases are asked for, and logs a warning on first use.
func (s *Server) RegisterAlias(alias, target string) {
	s.reg.mu.Lock()
	defer s.reg.mu.Unlock()
	base, ok := s.reg.methods[target]
	if !ok || base.aliasOf != nil {
		panic(fmt.Errorf("jsonrpc: alias %q: %q is not a registered method", alias, target))
	}
	if _, dup := s.reg.methods[alias]; dup || alias == "" {
		panic(fmt.Errorf("jsonrpc: alias %q: name empty or already registered", alias))
	}
	s.reg.methods[alias] = &method{name: alias, handler: base.handler, states: base.states, hidden: base.hidden, aliasOf: base}
}

// SetState moves the server to state st, as framework_start_init does.
func (s *Server) SetState(st State) { s.state.Store(uint32(st)) }

// State reports the current state.
func (s *Server) State() State { return State(s.state.Load()) }

// Methods lists the registered method names (aliases excluded) in sorted
// order; with currentOnly, only those callable in the current state.
// Methods registered with ListedOnlyWhenAllowed are left out while not
// callable either way.
func (s *Server) Methods(currentOnly bool) []string {
	return s.list(currentOnly, false)
}

// Aliases lists the registered deprecated aliases in sorted order; with
// currentOnly, only those callable in the current state.
func (s *Server) Aliases(currentOnly bool) []string {
	return s.list(currentOnly, true)
}

func (s *Server) list(currentOnly, aliases bool) []string {
	st := s.State()
	s.reg.mu.RLock()
	defer s.reg.mu.RUnlock()
	var names []string
	for name, m := range s.reg.methods {
		if (m.aliasOf != nil) != aliases || ((currentOnly || m.hidden) && !m.allowed(st)) {
			continue
		}
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}

// allowed mirrors SPDK's test (state_mask & state) == state.
func (m *method) allowed(st State) bool { return m.states&st == st }

// lookup finds the method for name, resolving aliases, and reports whether
// it may run in the current state. A nil method means "Method not found".
func (s *Server) lookup(name string) (*method, *Error) {
	s.reg.mu.RLock()
	m, ok := s.reg.methods[name]
	s.reg.mu.RUnlock()
	if !ok {
		return nil, &Error{Code: CodeMethodNotFound, Message: MsgMethodNotFound}
	}
	if m.aliasOf != nil {
		s.reg.mu.Lock()
		warn := !m.warned
		m.warned = true
		s.reg.mu.Unlock()
		if warn {
			s.log.Warn("RPC method is deprecated", "method", m.name, "use", m.aliasOf.name)
		}
		m = m.aliasOf
	}
	if st := s.State(); !m.allowed(st) {
		if st == StateStartup {
			return nil, &Error{Code: CodeInvalidState, Message: MsgNeedsRuntime}
		}
		return nil, &Error{Code: CodeInvalidState, Message: MsgNeedsStartup}
	}
	return m, nil
}

// GetMethodsParams are the parameters of rpc_get_methods.
type GetMethodsParams struct {
	Current        bool `json:"current"`
	IncludeAliases bool `json:"include_aliases"`
}

// GetMethodsHandler returns SPDK's rpc_get_methods for this server:
// optional params {current, include_aliases}, a decode failure answered with
// -32602 "Invalid parameters", and a result that lists the method names,
// followed by the aliases when include_aliases is set. Register it with
// AllowedIn(StateStartup|StateRuntime).
func (s *Server) GetMethodsHandler() Handler {
	return func(_ context.Context, params json.RawMessage) (any, error) {
		var p GetMethodsParams
		if err := DecodeParams(params, &p, nil); err != nil {
			return nil, err
		}
		names := s.Methods(p.Current)
		if p.IncludeAliases {
			names = append(names, s.Aliases(p.Current)...)
		}
		if names == nil {
			names = []string{}
		}
		return names, nil
	}
}
