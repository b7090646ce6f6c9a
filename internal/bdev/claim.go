package bdev

import "fmt"

// Claim is exclusive ownership of a registered device, like SPDK's module
// claim: the holder (a cache volume, a delay or error vbdev, an NBD export
// opened for writing) is the only one that should issue IO to it, and it is
// told through its hot-remove callback when the device is unregistered.
//
// A Claim ends when it is released or when its device is unregistered.
type Claim struct {
	r        *Registry
	reg      *registration
	owner    string
	onRemove func()
}

// Claim gives owner exclusive ownership of the device registered under name
// (or an alias of it). onRemove, which may be nil, is called once, without
// the registry lock held, if the device is unregistered while the claim is
// held; the claim is already dropped when it runs. Claim fails with an error
// wrapping ErrNoSuchDevice if the device is unknown and ErrDeviceClaimed,
// naming the current owner, if it is claimed.
func (r *Registry) Claim(name, owner string, onRemove func()) (*Claim, error) {
	if owner == "" {
		return nil, fmt.Errorf("claim device %q: empty owner: %w", name, ErrInvalidName)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	reg := r.findLocked(name)
	if reg == nil {
		return nil, fmt.Errorf("claim device %q for %q: %w", name, owner, ErrNoSuchDevice)
	}
	if reg.claim != nil {
		return nil, fmt.Errorf("claim device %q for %q: held by %q: %w", name, owner, reg.claim.owner, ErrDeviceClaimed)
	}
	c := &Claim{r: r, reg: reg, owner: owner, onRemove: onRemove}
	reg.claim = c
	return c, nil
}

// Release gives the device up. It is idempotent and a no-op once the device
// was unregistered; it never calls the hot-remove callback.
func (c *Claim) Release() {
	c.r.mu.Lock()
	defer c.r.mu.Unlock()
	if c.reg.claim == c {
		c.reg.claim = nil
	}
}

// Owner returns the owner name given to Registry.Claim.
func (c *Claim) Owner() string { return c.owner }

// Device returns the claimed device.
func (c *Claim) Device() Device { return c.reg.dev }

// ClaimOwner reports who holds the device registered under name (or an alias
// of it). claimed is false for an unclaimed or unknown device.
func (r *Registry) ClaimOwner(name string) (owner string, claimed bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	reg := r.findLocked(name)
	if reg == nil || reg.claim == nil {
		return "", false
	}
	return reg.claim.owner, true
}
