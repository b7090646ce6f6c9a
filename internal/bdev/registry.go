package bdev

import (
	"fmt"
	"slices"
	"sync"

	"github.com/google/uuid"
)

// Registry names devices, hands out exclusive claims on them (claim.go) and
// announces their arrival and removal to subscribers (event.go). Each daemon,
// and each test, builds its own with NewRegistry; there is no global one.
//
// Names and aliases share one namespace. A device's lower-case UUID string is
// registered as an alias automatically unless it equals the name or the UUID
// is zero.
//
// Concurrency contract: every method is safe for concurrent use. The registry
// never holds its lock while it calls out, neither into a Device (other than
// Info, which must not block) nor into a subscriber or a hot-remove callback,
// so those callbacks may call back into the registry (Lookup, Claim,
// Register, Unregister, Release, ...). The Device values it hands out are
// shared: the registry does not close them, and Unregister returns the device
// so that its caller closes it once the claim holder has let go.
type Registry struct {
	mu struct {
		sync.Mutex
		// byName maps every name and alias, of live and of removing
		// devices, to its registration.
		byName map[string]*registration
		// devices holds live and removing registrations in registration
		// order.
		devices []*registration
		// subs is copy-on-write: it is replaced, never changed in place,
		// so a queued event may keep the slice it was published to.
		subs []*subscriber
		// queue holds events in the order their changes were made and
		// not yet delivered; delivering is set while one goroutine drains
		// it (see deliver).
		queue      []pendingEvent
		delivering bool
	}
}

// registration is one registered device. dev, name and aliases are
// immutable; claim and removing are guarded by Registry.mu.
type registration struct {
	dev     Device
	name    string
	aliases []string // including the UUID alias; never the name
	claim   *Claim   // current holder, nil when unclaimed
	// removing is set by Unregister while it runs the hot-remove callback:
	// the device is no longer visible (Lookup, List, Claim fail) but its
	// names stay reserved until the Removed event is queued.
	removing bool
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry {
	r := &Registry{}
	r.mu.byName = make(map[string]*registration)
	return r
}

// Register adds d under its Info().Name, under each of aliases and under its
// UUID, then publishes an EventAdded. It fails with an error wrapping
// ErrExists if any of these names is taken (or repeated), and with
// ErrInvalidName if one is empty; nothing is registered then.
func (r *Registry) Register(d Device, aliases ...string) error {
	info := d.Info()
	names := make([]string, 0, len(aliases)+2)
	names = append(names, info.Name)
	names = append(names, aliases...)
	if info.UUID != uuid.Nil {
		if u := info.UUID.String(); !slices.Contains(names, u) {
			names = append(names, u)
		}
	}
	for i, n := range names {
		if n == "" {
			return fmt.Errorf("register device %q: empty name or alias: %w", info.Name, ErrInvalidName)
		}
		if slices.Contains(names[:i], n) {
			return fmt.Errorf("register device %q: name %q given twice: %w", info.Name, n, ErrExists)
		}
	}

	r.mu.Lock()
	for _, n := range names {
		if other, ok := r.mu.byName[n]; ok {
			r.mu.Unlock()
			return fmt.Errorf("register device %q: %q is taken by device %q: %w", info.Name, n, other.name, ErrExists)
		}
	}
	reg := &registration{dev: d, name: info.Name, aliases: names[1:]}
	for _, n := range names {
		r.mu.byName[n] = reg
	}
	r.mu.devices = append(r.mu.devices, reg)
	r.publishLocked(Event{Kind: EventAdded, Name: info.Name, Device: d})
	r.mu.Unlock()

	r.deliver()
	return nil
}

// Lookup returns the device registered under nameOrAlias. A UUID is found in
// any letter case. It fails with an error wrapping ErrNoSuchDevice.
func (r *Registry) Lookup(nameOrAlias string) (Device, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	reg := r.findLocked(nameOrAlias)
	if reg == nil {
		return nil, fmt.Errorf("lookup device %q: %w", nameOrAlias, ErrNoSuchDevice)
	}
	return reg.dev, nil
}

// Aliases returns the aliases of the device registered under nameOrAlias, in
// the order given to Register and ending with the UUID alias.
func (r *Registry) Aliases(nameOrAlias string) ([]string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	reg := r.findLocked(nameOrAlias)
	if reg == nil {
		return nil, fmt.Errorf("aliases of device %q: %w", nameOrAlias, ErrNoSuchDevice)
	}
	return slices.Clone(reg.aliases), nil
}

// List returns the registered devices in registration order.
func (r *Registry) List() []Device {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]Device, 0, len(r.mu.devices))
	for _, reg := range r.mu.devices {
		if !reg.removing {
			out = append(out, reg.dev)
		}
	}
	return out
}

// Unregister removes the device registered under name (or an alias of it):
// it disappears from Lookup and List at once; then the current claim holder's
// hot-remove callback, if any, runs synchronously on this goroutine and the
// claim is dropped; then the name and aliases are freed and an EventRemoved is
// published. The device is returned open: the caller closes it, normally
// after the claim holder has stopped using it. Unregister fails with an error
// wrapping ErrNoSuchDevice if nothing is registered under name.
func (r *Registry) Unregister(name string) (Device, error) {
	r.mu.Lock()
	reg := r.findLocked(name)
	if reg == nil {
		r.mu.Unlock()
		return nil, fmt.Errorf("unregister device %q: %w", name, ErrNoSuchDevice)
	}
	reg.removing = true
	claim := reg.claim
	reg.claim = nil
	r.mu.Unlock()

	if claim != nil && claim.onRemove != nil {
		claim.onRemove()
	}

	r.mu.Lock()
	delete(r.mu.byName, reg.name)
	for _, a := range reg.aliases {
		delete(r.mu.byName, a)
	}
	r.mu.devices = slices.DeleteFunc(r.mu.devices, func(x *registration) bool { return x == reg })
	r.publishLocked(Event{Kind: EventRemoved, Name: reg.name, Device: reg.dev})
	r.mu.Unlock()

	r.deliver()
	return reg.dev, nil
}

// findLocked returns the live registration under nameOrAlias, or nil. A UUID
// in upper or mixed case is looked up in its canonical lower-case form.
func (r *Registry) findLocked(nameOrAlias string) *registration {
	reg, ok := r.mu.byName[nameOrAlias]
	if !ok {
		if id, err := uuid.Parse(nameOrAlias); err == nil {
			reg, ok = r.mu.byName[id.String()]
		}
	}
	if !ok || reg.removing {
		return nil
	}
	return reg
}
