package rpc

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"blockcache/internal/bdev/nbdremote"
)

// nbdRetries are the start-up config's bdev_nbd_client_create entries
// whose server could not be reached (nbdremote.Unreachable), each tried
// again in the background every reconnect_delay_sec for as long as
// ctrlr_loss_timeout_sec allows, until the bdev is created. An entry
// stays here, and so in the config, until its bdev is created, deleted
// (bdev_nbd_client_delete), or created by hand (which replaces it once it
// succeeds), even once its retry ended: a restart tries it again, as it
// would any start-up entry that failed.
type nbdRetries struct {
	// onConnected runs after a retry created its bdev (to persist the
	// config); may be nil.
	onConnected func()

	mu struct {
		sync.Mutex
		byName map[string]*nbdRetry
		closed bool // set by close: no retry starts any more
	}
}

// nbdRetry is one entry: its goroutine's state while it runs, and what the
// config lists.
type nbdRetry struct {
	spec    nbdClientSpec
	log     *slog.Logger
	attempt func(context.Context) error // creates and registers the bdev
	// deadline is when ctrlr_loss_timeout_sec runs out; zero: never.
	deadline time.Time
	started  time.Time

	// Set by launchLocked and read under nbdRetries.mu: the goroutine's
	// cancel and end. The fields after them the goroutine writes, and
	// others read once done is closed.
	cancel context.CancelFunc
	done   chan struct{}
	// held is set, under nbdRetries.mu, while a create by hand of the name
	// has the goroutine stopped; the entry stays listed meanwhile.
	held bool

	attempts  int
	connected bool // the bdev was created and registered
	ended     bool // the goroutine gave up (time ran out, or a refusal)
}

func newNBDRetries(onConnected func()) *nbdRetries {
	t := &nbdRetries{onConnected: onConnected}
	t.mu.byName = map[string]*nbdRetry{}
	return t
}

// start begins retrying s in the background after its first attempt
// failed with err, and logs that once.
func (t *nbdRetries) start(s nbdClientSpec, log *slog.Logger, err error, attempt func(context.Context) error) {
	r := &nbdRetry{spec: s, log: log, attempt: attempt, started: time.Now(), attempts: 1}
	if s.opts.CtrlrLossTimeout > 0 {
		r.deadline = r.started.Add(s.opts.CtrlrLossTimeout)
	}
	until := "until it answers or the bdev is deleted (ctrlr_loss_timeout_sec -1)"
	if !r.deadline.IsZero() {
		until = "for ctrlr_loss_timeout_sec " + s.opts.CtrlrLossTimeout.String()
	}
	log.Warn("NBD client: the server cannot be reached at start; retrying in the background "+until,
		"err", err, "reconnect_delay", s.opts.ReconnectDelay)
	t.mu.Lock()
	defer t.mu.Unlock()
	t.mu.byName[s.name] = r
	t.launchLocked(r)
}

// resume restarts the goroutine of r, which pause returned, unless it had
// ended or r was deleted meanwhile.
func (t *nbdRetries) resume(r *nbdRetry) {
	t.mu.Lock()
	defer t.mu.Unlock()
	r.held = false
	if t.mu.byName[r.spec.name] != r {
		return
	}
	t.launchLocked(r)
}

// launchLocked starts r's goroutine, unless r ended or the table is
// closed (r stays listed, without goroutine).
func (t *nbdRetries) launchLocked(r *nbdRetry) {
	r.done = make(chan struct{})
	if r.ended || t.mu.closed {
		r.cancel = func() {}
		close(r.done)
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go t.run(ctx, r)
}

// run tries r every reconnect delay until it connects, ctx is cancelled,
// the server refuses it for a reason retrying does not fix, or the next
// attempt would come after the deadline: with ctrlr_loss_timeout_sec N
// and reconnect_delay_sec D, attempts are made at D, 2D, ... up to N
// seconds after the first.
func (t *nbdRetries) run(ctx context.Context, r *nbdRetry) {
	defer close(r.done)
	delay := r.spec.opts.ReconnectDelay
	timer := time.NewTimer(delay)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		r.attempts++
		err := r.attempt(ctx)
		switch {
		case err == nil:
			r.connected = true
			t.forget(r)
			r.log.Info("NBD client: connected; the bdev is created", "attempts", r.attempts, "after", time.Since(r.started).Round(time.Millisecond))
			if t.onConnected != nil {
				t.onConnected()
			}
			return
		case ctx.Err() != nil:
			return
		case !nbdremote.Unreachable(err):
			r.ended = true
			r.log.Error("NBD client: stopped retrying the start-up create: the server answered, but the bdev cannot be created; the entry stays in the config", "err", err, "attempts", r.attempts)
			return
		case !r.deadline.IsZero() && r.started.Add(time.Duration(r.attempts)*delay).After(r.deadline):
			r.ended = true
			r.log.Error("NBD client: gave up retrying the start-up create: ctrlr_loss_timeout_sec ran out; the entry stays in the config", "err", err, "attempts", r.attempts)
			return
		}
		timer.Reset(delay)
	}
}

// forget removes r from the table, if it is still there.
func (t *nbdRetries) forget(r *nbdRetry) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.mu.byName[r.spec.name] == r {
		delete(t.mu.byName, r.spec.name)
	}
}

// pause stops the goroutine of the entry called name, for a create by
// hand, waiting for an attempt in progress to end (a connect in progress
// is abandoned); the entry stays listed in the config. It returns the
// entry, which the caller then forgets (the create succeeded) or resumes
// (it failed); nil if there was none, another create holds it, or it
// connected before it stopped (the bdev then exists).
func (t *nbdRetries) pause(name string) *nbdRetry {
	t.mu.Lock()
	r := t.mu.byName[name]
	if r == nil || r.held {
		t.mu.Unlock()
		return nil
	}
	r.held = true
	cancel, done := r.cancel, r.done
	t.mu.Unlock()
	cancel()
	<-done
	if r.connected {
		t.mu.Lock()
		r.held = false
		t.mu.Unlock()
		return nil
	}
	return r
}

// remove drops the entry called name and stops its goroutine as pause
// does. It returns the entry if its bdev was not created; nil if there was
// none or it connected before it stopped.
func (t *nbdRetries) remove(name string) *nbdRetry {
	t.mu.Lock()
	r := t.mu.byName[name]
	if r == nil {
		t.mu.Unlock()
		return nil
	}
	delete(t.mu.byName, name)
	cancel, done := r.cancel, r.done
	t.mu.Unlock()
	cancel()
	<-done
	if r.connected {
		return nil
	}
	return r
}

// configItems are the entries' create entries, for the config; exists
// reports names whose bdev was created meanwhile, which are left out.
func (t *nbdRetries) configItems(exists func(name string) bool) []configItem {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []configItem
	for name, r := range t.mu.byName {
		if !exists(name) {
			out = append(out, configItem{name: name, entry: configEntry{Method: "bdev_nbd_client_create", Params: r.spec.cfg}})
		}
	}
	slices.SortFunc(out, func(a, b configItem) int { return strings.Compare(a.name, b.name) })
	return out
}

// close stops every goroutine and waits for them; the entries stay
// listed. Nothing starts afterwards.
func (t *nbdRetries) close() {
	t.mu.Lock()
	t.mu.closed = true
	type running struct {
		cancel context.CancelFunc
		done   chan struct{}
	}
	rs := make([]running, 0, len(t.mu.byName))
	for _, r := range t.mu.byName {
		rs = append(rs, running{r.cancel, r.done})
	}
	t.mu.Unlock()
	for _, r := range rs {
		r.cancel()
		<-r.done
	}
}

// StopNBDClientRetries stops retrying the start-up config's NBD client
// bdevs whose server was down (docs/remote.md); the daemon calls it at
// shutdown.
func (a *API) StopNBDClientRetries() { a.nbdRetries.close() }
