package ocf

// WaitingWrites is, for tests, the number of writes registered as waiting
// for their order locks on the stripe of core line l of co.
func (co *Core) WaitingWrites(l uint64) int {
	s := &co.cache.stripes
	reg := &s.locks[s.index(co.id, l)]
	reg.absorbMu.Lock()
	defer reg.absorbMu.Unlock()
	n := 0
	for a := reg.waiting; a != nil; a = a.next {
		n++
	}
	return n
}

// HoldStripeOrder takes, for tests, the order lock of the stripe of core
// line l of co, as a write in its core write holds it; the returned func
// lets go of it.
func (co *Core) HoldStripeOrder(l uint64) (release func()) {
	s := &co.cache.stripes
	lk := &s.locks[s.index(co.id, l)]
	lk.lockOrder()
	return lk.unlockOrder
}
