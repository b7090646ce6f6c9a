package bdev_test

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/google/uuid"

	"blockcache/internal/bdev"
	"blockcache/internal/bdev/malloc"
)

// newDev returns a small malloc device named name with a fixed UUID derived
// from the name, so tests can predict the UUID alias.
func newDev(t *testing.T, name string) *malloc.Device {
	t.Helper()
	d, err := malloc.New(name, uuid.NewSHA1(uuid.NameSpaceOID, []byte(name)), 512, 8)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func mustRegister(t *testing.T, r *bdev.Registry, d bdev.Device, aliases ...string) {
	t.Helper()
	if err := r.Register(d, aliases...); err != nil {
		t.Fatalf("Register(%s): %v", d.Info().Name, err)
	}
}

func names(ds []bdev.Device) []string {
	var out []string
	for _, d := range ds {
		out = append(out, d.Info().Name)
	}
	return out
}

func TestRegistryLookupByNameAliasAndUUID(t *testing.T) {
	r := bdev.NewRegistry()
	d := newDev(t, "Malloc0")
	mustRegister(t, r, d, "fast", "scratch")
	id := d.Info().UUID.String()
	for _, key := range []string{"Malloc0", "fast", "scratch", id, strings.ToUpper(id)} {
		got, err := r.Lookup(key)
		if err != nil {
			t.Fatalf("Lookup(%q): %v", key, err)
		}
		if got != bdev.Device(d) {
			t.Fatalf("Lookup(%q) = %v, want Malloc0", key, got.Info().Name)
		}
	}
	al, err := r.Aliases("fast")
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"fast", "scratch", id}; !slices.Equal(al, want) {
		t.Fatalf("Aliases = %q, want %q", al, want)
	}
	_, err = r.Lookup("malloc0")
	if !errors.Is(err, bdev.ErrNoSuchDevice) || !strings.Contains(err.Error(), `"malloc0"`) {
		t.Fatalf("Lookup of unknown name: %v, want ErrNoSuchDevice naming it", err)
	}
	if _, err := r.Aliases("nope"); !errors.Is(err, bdev.ErrNoSuchDevice) {
		t.Fatalf("Aliases of unknown name: %v", err)
	}
}

func TestRegistryUUIDAliasSkippedWhenItIsTheNameOrNil(t *testing.T) {
	r := bdev.NewRegistry()
	id := uuid.New()
	d, err := malloc.New(id.String(), id, 512, 1)
	if err != nil {
		t.Fatal(err)
	}
	mustRegister(t, r, d)
	if al, _ := r.Aliases(id.String()); len(al) != 0 {
		t.Fatalf("aliases of a device named by its UUID = %q, want none", al)
	}
	// An explicit alias equal to the UUID is not a conflict with itself.
	d2 := newDev(t, "d2")
	mustRegister(t, r, d2, d2.Info().UUID.String())
	if al, _ := r.Aliases("d2"); len(al) != 1 {
		t.Fatalf("aliases = %q, want the UUID once", al)
	}
}

func TestRegistryRegisterConflicts(t *testing.T) {
	a := newDev(t, "a")
	tests := []struct {
		name    string
		dev     bdev.Device
		aliases []string
		wantErr error
	}{
		{"same name", newDev(t, "a"), nil, bdev.ErrExists},
		{"name is an existing alias", newDev(t, "alias-a"), nil, bdev.ErrExists},
		{"alias is an existing name", newDev(t, "b"), []string{"a"}, bdev.ErrExists},
		{"alias is an existing alias", newDev(t, "c"), []string{"alias-a"}, bdev.ErrExists},
		{"alias is an existing UUID", newDev(t, "d"), []string{a.Info().UUID.String()}, bdev.ErrExists},
		{"alias repeated", newDev(t, "e"), []string{"x", "x"}, bdev.ErrExists},
		{"alias equals own name", newDev(t, "f"), []string{"f"}, bdev.ErrExists},
		{"empty alias", newDev(t, "g"), []string{""}, bdev.ErrInvalidName},
		{"empty name", newDev(t, ""), nil, bdev.ErrInvalidName},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := bdev.NewRegistry()
			mustRegister(t, r, a, "alias-a")
			err := r.Register(tc.dev, tc.aliases...)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("Register = %v, want %v", err, tc.wantErr)
			}
			if !strings.Contains(err.Error(), fmt.Sprintf("%q", tc.dev.Info().Name)) {
				t.Errorf("error %q does not name the device", err)
			}
			// Nothing of the failed registration is visible.
			if got := names(r.List()); !slices.Equal(got, []string{"a"}) {
				t.Fatalf("List = %q after failed Register, want [a]", got)
			}
			if tc.dev.Info().Name != "a" {
				if _, err := r.Lookup(tc.dev.Info().UUID.String()); !errors.Is(err, bdev.ErrNoSuchDevice) {
					t.Fatalf("UUID of the rejected device resolves: %v", err)
				}
			}
		})
	}
}

func TestRegistryListOrderAndUnregister(t *testing.T) {
	r := bdev.NewRegistry()
	for _, n := range []string{"c", "a", "b"} {
		mustRegister(t, r, newDev(t, n), n+"-alias")
	}
	if got := names(r.List()); !slices.Equal(got, []string{"c", "a", "b"}) {
		t.Fatalf("List = %q, want registration order [c a b]", got)
	}
	d, err := r.Unregister("a-alias") // by alias
	if err != nil {
		t.Fatal(err)
	}
	if d.Info().Name != "a" {
		t.Fatalf("Unregister returned %q", d.Info().Name)
	}
	// Unregister does not close the device.
	if err := d.ReadAt(make([]byte, 512), 0); err != nil {
		t.Fatalf("device closed by Unregister: %v", err)
	}
	if got := names(r.List()); !slices.Equal(got, []string{"c", "b"}) {
		t.Fatalf("List = %q after Unregister, want [c b]", got)
	}
	for _, key := range []string{"a", "a-alias", d.Info().UUID.String()} {
		if _, err := r.Lookup(key); !errors.Is(err, bdev.ErrNoSuchDevice) {
			t.Fatalf("Lookup(%q) after Unregister: %v", key, err)
		}
	}
	if _, err := r.Unregister("a"); !errors.Is(err, bdev.ErrNoSuchDevice) {
		t.Fatalf("second Unregister = %v, want ErrNoSuchDevice", err)
	}
	// The names are free again.
	mustRegister(t, r, d, "a-alias")
	if got := names(r.List()); !slices.Equal(got, []string{"c", "b", "a"}) {
		t.Fatalf("List = %q after re-register, want [c b a]", got)
	}
}

func TestRegistryClaimIsExclusive(t *testing.T) {
	r := bdev.NewRegistry()
	d := newDev(t, "core")
	mustRegister(t, r, d, "core-alias")

	if owner, claimed := r.ClaimOwner("core"); claimed || owner != "" {
		t.Fatalf("ClaimOwner of fresh device = %q, %v", owner, claimed)
	}
	c, err := r.Claim("core-alias", "cache1", nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.Owner() != "cache1" || c.Device() != bdev.Device(d) {
		t.Fatalf("claim = %q on %v", c.Owner(), c.Device().Info().Name)
	}
	if owner, claimed := r.ClaimOwner(d.Info().UUID.String()); !claimed || owner != "cache1" {
		t.Fatalf("ClaimOwner = %q, %v, want cache1, true", owner, claimed)
	}
	_, err = r.Claim("core", "cache2", nil)
	if !errors.Is(err, bdev.ErrDeviceClaimed) || !strings.Contains(err.Error(), `"cache1"`) {
		t.Fatalf("second Claim = %v, want ErrDeviceClaimed naming cache1", err)
	}
	if bdev.Errno(err) != syscall.EBUSY {
		t.Fatalf("Errno = %v, want EBUSY", bdev.Errno(err))
	}

	c.Release()
	c.Release() // idempotent
	if _, claimed := r.ClaimOwner("core"); claimed {
		t.Fatal("still claimed after Release")
	}
	c2, err := r.Claim("core", "cache2", nil)
	if err != nil {
		t.Fatalf("Claim after Release: %v", err)
	}
	c.Release() // a stale claim must not release the new holder
	if owner, claimed := r.ClaimOwner("core"); !claimed || owner != "cache2" {
		t.Fatalf("stale Release dropped the new claim: %q, %v", owner, claimed)
	}
	c2.Release()

	if _, err := r.Claim("nope", "x", nil); !errors.Is(err, bdev.ErrNoSuchDevice) {
		t.Fatalf("Claim of unknown device = %v", err)
	}
	if _, err := r.Claim("core", "", nil); !errors.Is(err, bdev.ErrInvalidName) {
		t.Fatalf("Claim with empty owner = %v", err)
	}
	if _, claimed := r.ClaimOwner("nope"); claimed {
		t.Fatal("unknown device reported claimed")
	}
}

// TestRegistryUnregisterHotRemoveOrder checks the order Unregister promises:
// the device is gone, then the hot-remove callback runs (able to use the
// registry), then EventRemoved is published, then the name is free.
func TestRegistryUnregisterHotRemoveOrder(t *testing.T) {
	r := bdev.NewRegistry()
	d := newDev(t, "core")
	mustRegister(t, r, d)
	var log []string
	cancel := r.Subscribe(func(ev bdev.Event) {
		log = append(log, ev.Kind.String()+" "+ev.Name)
	})
	defer cancel()

	var c *bdev.Claim
	c, err := r.Claim("core", "cache1", func() {
		log = append(log, "hot-remove")
		if _, err := r.Lookup("core"); !errors.Is(err, bdev.ErrNoSuchDevice) {
			t.Errorf("Lookup inside hot-remove: %v, want ErrNoSuchDevice", err)
		}
		if _, claimed := r.ClaimOwner("core"); claimed {
			t.Error("claim still held inside hot-remove")
		}
		if len(r.List()) != 0 {
			t.Error("List inside hot-remove still has the device")
		}
		// The name stays reserved until the removal finished.
		if err := r.Register(newDev(t, "core")); !errors.Is(err, bdev.ErrExists) {
			t.Errorf("Register of the same name inside hot-remove: %v, want ErrExists", err)
		}
		if _, err := r.Unregister("core"); !errors.Is(err, bdev.ErrNoSuchDevice) {
			t.Errorf("nested Unregister: %v, want ErrNoSuchDevice", err)
		}
		c.Release() // must not deadlock
	})
	if err != nil {
		t.Fatal(err)
	}
	got, err := r.Unregister("core")
	if err != nil || got != bdev.Device(d) {
		t.Fatalf("Unregister = %v, %v", got, err)
	}
	if want := []string{"hot-remove", "removed core"}; !slices.Equal(log, want) {
		t.Fatalf("order = %q, want %q", log, want)
	}
	mustRegister(t, r, newDev(t, "core"))
	if want := []string{"hot-remove", "removed core", "added core"}; !slices.Equal(log, want) {
		t.Fatalf("order = %q, want %q", log, want)
	}
}

func TestRegistryEvents(t *testing.T) {
	r := bdev.NewRegistry()
	var log []string
	cancel1 := r.Subscribe(func(ev bdev.Event) {
		log = append(log, fmt.Sprintf("1:%v %s %s", ev.Kind, ev.Name, ev.Device.Info().Name))
	})
	cancel2 := r.Subscribe(func(ev bdev.Event) { log = append(log, fmt.Sprintf("2:%v %s", ev.Kind, ev.Name)) })

	mustRegister(t, r, newDev(t, "a"))
	if _, err := r.Unregister("a"); err != nil {
		t.Fatal(err)
	}
	want := []string{"1:added a a", "2:added a", "1:removed a a", "2:removed a"}
	if !slices.Equal(log, want) {
		t.Fatalf("events = %q, want %q", log, want)
	}

	cancel1()
	cancel1() // idempotent
	log = nil
	mustRegister(t, r, newDev(t, "b"))
	if want := []string{"2:added b"}; !slices.Equal(log, want) {
		t.Fatalf("after cancel: %q, want %q", log, want)
	}
	cancel2()
	log = nil
	mustRegister(t, r, newDev(t, "c"))
	if len(log) != 0 {
		t.Fatalf("events after all cancelled: %q", log)
	}
	// A failed Register publishes nothing.
	r.Subscribe(func(ev bdev.Event) { log = append(log, ev.Name) })
	if err := r.Register(newDev(t, "c")); err == nil {
		t.Fatal("duplicate Register succeeded")
	}
	if len(log) != 0 {
		t.Fatalf("failed Register published %q", log)
	}
}

// TestRegistryCallbacksMayReenter registers a device from inside an event
// callback, as an examine step building a vbdev on a new base would, and
// checks that the nested event follows the one being delivered.
func TestRegistryCallbacksMayReenter(t *testing.T) {
	r := bdev.NewRegistry()
	var log []string
	r.Subscribe(func(ev bdev.Event) {
		log = append(log, "A:"+ev.Kind.String()+" "+ev.Name)
		if ev.Kind == bdev.EventAdded && ev.Name == "base" {
			if _, err := r.Claim("base", "vbdev", nil); err != nil {
				t.Errorf("Claim from callback: %v", err)
			}
			if err := r.Register(newDev(t, "vbdev")); err != nil {
				t.Errorf("Register from callback: %v", err)
			}
		}
	})
	r.Subscribe(func(ev bdev.Event) { log = append(log, "B:"+ev.Kind.String()+" "+ev.Name) })
	mustRegister(t, r, newDev(t, "base"))
	want := []string{"A:added base", "B:added base", "A:added vbdev", "B:added vbdev"}
	if !slices.Equal(log, want) {
		t.Fatalf("events = %q, want %q", log, want)
	}
	if owner, _ := r.ClaimOwner("base"); owner != "vbdev" {
		t.Fatalf("owner = %q", owner)
	}
}

func TestRegistrySurvivesPanickingSubscriber(t *testing.T) {
	r := bdev.NewRegistry()
	boom := true
	var seen []string
	r.Subscribe(func(ev bdev.Event) {
		seen = append(seen, ev.Name)
		if boom {
			boom = false
			panic(errors.New("subscriber failed"))
		}
	})
	func() {
		defer func() {
			if recover() == nil {
				t.Fatal("panic did not propagate")
			}
		}()
		mustRegister(t, r, newDev(t, "a"))
	}()
	if _, err := r.Lookup("a"); err != nil {
		t.Fatalf("registration lost by a panicking subscriber: %v", err)
	}
	mustRegister(t, r, newDev(t, "b"))
	if !slices.Equal(seen, []string{"a", "b"}) {
		t.Fatalf("seen = %q, want [a b]", seen)
	}
}

func TestEventKindString(t *testing.T) {
	for k, want := range map[bdev.EventKind]string{
		bdev.EventAdded: "added", bdev.EventRemoved: "removed", 0: "EventKind(0)", 9: "EventKind(9)",
	} {
		if got := k.String(); got != want {
			t.Errorf("EventKind(%d).String() = %q, want %q", uint8(k), got, want)
		}
	}
}

// TestRegistryConcurrent hammers one registry from many goroutines under the
// race detector and checks that each name's events alternate added/removed,
// that the final state matches the events, and that a hot-remove callback ran
// exactly for each claim still held at Unregister.
func TestRegistryConcurrent(t *testing.T) {
	r := bdev.NewRegistry()
	const workers, rounds = 8, 200

	var mu sync.Mutex
	events := map[string][]bdev.EventKind{}
	r.Subscribe(func(ev bdev.Event) {
		mu.Lock()
		events[ev.Name] = append(events[ev.Name], ev.Kind)
		mu.Unlock()
		r.List() // re-entering must not deadlock
	})

	devs := make([][]bdev.Device, workers)
	for w := range devs {
		for i := range 4 {
			devs[w] = append(devs[w], newDev(t, fmt.Sprintf("w%d-%d", w, i)))
		}
	}
	var hotRemoved, claimedAtRemove sync.Map // keys of claims taken / hot-removed
	var wg sync.WaitGroup
	stopChurn := make(chan struct{})
	churned := make(chan struct{})
	go func() { // subscribers come and go while events flow
		defer close(churned)
		for {
			select {
			case <-stopChurn:
				return
			default:
			}
			cancel := r.Subscribe(func(bdev.Event) {})
			r.List()
			cancel()
		}
	}()
	for w := range workers {
		wg.Go(func() {
			for i := range rounds {
				d := devs[w][i%4]
				name := d.Info().Name
				if err := r.Register(d); err != nil {
					if !errors.Is(err, bdev.ErrExists) {
						t.Errorf("Register: %v", err)
					}
					continue
				}
				// Another worker may race to claim the same device.
				other := devs[(w+1)%workers][i%4].Info().Name
				if c, err := r.Claim(other, fmt.Sprint("w", w), nil); err == nil {
					c.Release()
				} else if !errors.Is(err, bdev.ErrNoSuchDevice) && !errors.Is(err, bdev.ErrDeviceClaimed) {
					t.Errorf("Claim: %v", err)
				}
				if i%3 == 0 {
					key := fmt.Sprint(name, "#", i)
					if _, err := r.Claim(name, "holder", func() { hotRemoved.Store(key, true) }); err == nil {
						claimedAtRemove.Store(key, true)
					}
				}
				if _, err := r.Lookup(d.Info().UUID.String()); err != nil {
					t.Errorf("Lookup own device: %v", err)
				}
				if i%2 == 0 {
					if _, err := r.Unregister(name); err != nil {
						t.Errorf("Unregister: %v", err)
					}
				}
			}
		})
	}
	wg.Wait()
	close(stopChurn)
	<-churned

	live := map[string]bool{}
	for _, d := range r.List() {
		live[d.Info().Name] = true
	}
	for name, kinds := range events {
		for i, k := range kinds {
			want := bdev.EventAdded
			if i%2 == 1 {
				want = bdev.EventRemoved
			}
			if k != want {
				t.Fatalf("%s: event %d is %v, want %v (all: %v)", name, i, k, want, kinds)
			}
		}
		if gotLive := len(kinds)%2 == 1; gotLive != live[name] {
			t.Fatalf("%s: events %v disagree with List (live=%v)", name, kinds, live[name])
		}
	}
	// Unregister what is left so that every claim still held is hot-removed.
	for name := range live {
		if _, err := r.Unregister(name); err != nil {
			t.Fatal(err)
		}
	}
	claimedAtRemove.Range(func(k, _ any) bool {
		if _, ok := hotRemoved.Load(k); !ok {
			t.Errorf("claim %v held at Unregister but hot-remove not called", k)
		}
		return true
	})
	hotRemoved.Range(func(k, _ any) bool {
		if _, ok := claimedAtRemove.Load(k); !ok {
			t.Errorf("hot-remove %v called for a claim never taken", k)
		}
		return true
	})
}
