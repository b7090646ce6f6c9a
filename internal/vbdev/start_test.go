package vbdev_test

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"blockcache/internal/bdev"
	"blockcache/internal/bdev/file"
	"blockcache/internal/bdev/malloc"
	"blockcache/internal/ocf"
	"blockcache/internal/ocf/metadata"
	"blockcache/internal/vbdev"
)

// logBuf is a concurrency-safe log sink.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// newLoggedEnv is newEnv with the manager's log kept, and devs registered.
func newLoggedEnv(t *testing.T, devs ...bdev.Device) (*env, *logBuf) {
	reg := bdev.NewRegistry()
	log := &logBuf{}
	m := vbdev.NewManager(reg, slog.New(slog.NewTextHandler(log, nil)))
	t.Cleanup(m.Close)
	e := &env{t: t, reg: reg, m: m}
	for _, d := range devs {
		if err := reg.Register(d); err != nil {
			t.Fatal(err)
		}
	}
	return e, log
}

// dirtyCache builds a wb cache C1 on Cache (8 MiB) and core (registered
// as Core), writes lines dirty lines of 4 KiB, and shuts the manager down
// without write-back: the dirty data is on the cache device only.
func dirtyCache(t *testing.T, core bdev.Device, lines int) (cache *malloc.Device, data []byte) {
	t.Helper()
	e, _ := newLoggedEnv(t, core)
	cache = e.malloc("Cache", 8)
	e.create("C1", "wb", "Cache", core.Info().Name)
	vol, _ := e.reg.Lookup("C1")
	data = bytes.Repeat([]byte("dirty data:0123"), lines*4096/15+1)[:lines*4096]
	if err := vol.WriteAt(data, 0, false); err != nil {
		t.Fatal(err)
	}
	if err := e.m.Shutdown(false); err != nil {
		t.Fatal(err)
	}
	return cache, data
}

// TestLostSuperblocksRefused: a cache device whose superblocks were zeroed
// still carries its entry sectors; starting on it is refused with what was
// found and what to do, leaving nothing claimed, and force initialises it
// with a warning counting the dirty lines it discards.
func TestLostSuperblocksRefused(t *testing.T) {
	core := mallocDev(t, "Core", 4)
	cache, _ := dirtyCache(t, core, 37)
	probe, err := ocf.Probe(cache)
	if err != nil {
		t.Fatal(err)
	}
	tag := metadata.TagOf(probe.CacheID)
	// The superblocks zeroed, and a partition table over the first
	// (someone took the device for a new disk).
	zeroed := make([]byte, metadata.SuperblockArea)
	copy(zeroed[512:], "EFI PART")
	if err := cache.WriteAt(zeroed, 0, false); err != nil {
		t.Fatal(err)
	}

	e, log := newLoggedEnv(t, cache, core)
	_, err = e.m.Create(vbdev.Params{Name: "C1", Mode: "wb", CacheBdev: "Cache", CoreBdev: "Core"})
	if !errors.Is(err, vbdev.ErrNotBlank) {
		t.Fatalf("create over zeroed superblocks: %v, want ErrNotBlank", err)
	}
	for _, want := range []string{`cache device "Cache" holds no readable superblock but`, "entry sectors of cache " + tag.String(),
		"37 dirty lines in the entries still readable", ") and gpt partition table (magic at byte 512)",
		"run 'blockcache recover' to write them back, or pass force to discard them"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("refusal %q does not say %q", err, want)
		}
	}
	if _, claimed := e.reg.ClaimOwner("Cache"); claimed {
		t.Error("refused create left the cache claimed")
	}
	if strings.Contains(log.String(), "cache started") {
		t.Fatalf("the cache was initialised:\n%s", log)
	}

	if _, err := e.m.Create(vbdev.Params{Name: "C1", Mode: "wb", CacheBdev: "Cache", CoreBdev: "Core", Force: true}); err != nil {
		t.Fatalf("create with force: %v", err)
	}
	warn := lineWith(log.String(), "level=WARN", "remains of a cache")
	if !strings.Contains(warn, "dirty_lines_discarded=37") || !strings.Contains(warn, "cache_tag="+tag.String()) {
		t.Errorf("force did not warn with the discarded dirty lines:\n%s", log)
	}
}

// TestSignatureRefused: a device with a file system or partition table
// signature is not blank; force overwrites it, warning what it held.
func TestSignatureRefused(t *testing.T) {
	for _, c := range []struct {
		name string
		off  int64
		data []byte
		says string
	}{
		{"gpt", 512, []byte("EFI PART"), "gpt partition table (magic at byte 512)"},
		{"btrfs", 65536 + 64, []byte("_BHRfS_M"), "btrfs file system (magic at byte 65600)"},
	} {
		t.Run(c.name, func(t *testing.T) {
			e, log := newLoggedEnv(t)
			cache := e.malloc("Cache", 8)
			e.malloc("Core", 4)
			sector := make([]byte, 512)
			copy(sector[c.off%512:], c.data)
			if err := cache.WriteAt(sector, c.off/512*512, false); err != nil {
				t.Fatal(err)
			}
			_, err := e.m.Create(vbdev.Params{Name: "C1", Mode: "wt", CacheBdev: "Cache", CoreBdev: "Core"})
			if !errors.Is(err, vbdev.ErrNotBlank) || !strings.Contains(err.Error(), `cache device "Cache" holds no cache but `+c.says) ||
				!strings.Contains(err.Error(), "wipefs") {
				t.Fatalf("create over a %s signature: %v", c.name, err)
			}
			if _, err := e.m.Create(vbdev.Params{Name: "C1", Mode: "wt", CacheBdev: "Cache", CoreBdev: "Core", Force: true}); err != nil {
				t.Fatalf("create with force: %v", err)
			}
			if w := lineWith(log.String(), "level=WARN", "not blank"); !strings.Contains(w, c.says) {
				t.Errorf("force did not warn what it overwrote:\n%s", log)
			}
		})
	}
}

// TestBlankInitialisesQuietly: a truly blank device is initialised with no
// warning.
func TestBlankInitialisesQuietly(t *testing.T) {
	e, log := newLoggedEnv(t)
	e.malloc("Cache", 8)
	e.malloc("Core", 4)
	e.create("C1", "wb", "Cache", "Core")
	if !strings.Contains(log.String(), "cache started") || strings.Contains(log.String(), "level=WARN") {
		t.Errorf("blank device:\n%s", log)
	}
}

// TestCoreIdentityMismatch: after a restart, a core bdev of the recorded
// name but another file (or size) is refused with both identities named,
// and the cache keeps the dirty data for the right one.
func TestCoreIdentityMismatch(t *testing.T) {
	dir := t.TempDir()
	open := func(name, path string, size int64) *file.Device {
		d, err := file.Open(name, path, file.Options{Create: true, Size: size})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { d.Close() })
		return d
	}
	right := open("Core", filepath.Join(dir, "core.img"), 4<<20)
	cache, data := dirtyCache(t, right, 5)

	for _, c := range []struct {
		name string
		core bdev.Device
	}{
		{"another file", open("Core", filepath.Join(dir, "other.img"), 4<<20)},
		{"another size", open("Core", filepath.Join(dir, "small.img"), 2<<20)},
	} {
		wrong := c.core.(*file.Device)
		// Registering the cache re-creates C1 from its metadata (examine),
		// which tries to start it at once; the core comes first, so that
		// it is that start that meets the wrong core.
		e, log := newLoggedEnv(t, wrong, cache)
		if e.started("C1") {
			t.Fatalf("%s: C1 started on the wrong core", c.name)
		}
		refusal := lineWith(log.String(), vbdev.ErrCoreMismatch.Error())
		want := []string{fmt.Sprintf(`recorded core 0 as \"Core\", 4194304 bytes, identity \"%s\"`, right.Identity()),
			fmt.Sprintf(`bdev \"Core\" is %d bytes, identity \"%s\"`, wrong.Info().SizeBytes(), wrong.Identity()),
			"the cache keeps the core's data"}
		for _, w := range want {
			if !strings.Contains(refusal, w) {
				t.Errorf("%s: refusal %q does not say %q\n%s", c.name, refusal, w, log)
			}
		}
		// A create with the same parameters takes over the examined vbdev,
		// which still does not start: if the create says so, it says why.
		_, err := e.m.Create(vbdev.Params{Name: "C1", Mode: "wb", CacheBdev: "Cache", CoreBdev: "Core"})
		if err != nil && !errors.Is(err, vbdev.ErrCoreMismatch) {
			t.Fatalf("%s: create over the examined vbdev: %v, want nil or ErrCoreMismatch", c.name, err)
		}
		if e.started("C1") {
			t.Fatalf("%s: C1 started on the wrong core after a create", c.name)
		}
		got := make([]byte, len(data))
		if err := wrong.ReadAt(got, 0); err != nil || bytes.Equal(got, data) {
			t.Fatalf("%s: the dirty data reached the wrong core (err %v)", c.name, err)
		}
	}

	// The right core still gets its data.
	e, _ := newLoggedEnv(t, cache, right)
	e.create("C1", "wb", "Cache", "Core")
	vol, _ := e.reg.Lookup("C1")
	got := make([]byte, len(data))
	if err := vol.ReadAt(got, 0); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("dirty data lost after the refusals (err %v)", err)
	}
}

// TestCoreIdentityUnknownAccepted: a core recorded without an identity (as
// every core of format version 1 metadata is) is attached by name and
// size, with a log line, and its identity is recorded from then on.
func TestCoreIdentityUnknownAccepted(t *testing.T) {
	path := filepath.Join(t.TempDir(), "core.img")
	fd, err := file.Open("Core", path, file.Options{Create: true, Size: 4 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fd.Close() })
	// The first run sees the core through a wrapper that hides its
	// identity.
	cache, data := dirtyCache(t, anonymous{fd}, 3)
	sb, err := ocf.Probe(cache)
	if err != nil || len(sb.Cores) != 1 || sb.Cores[0].Identity != "" {
		t.Fatalf("recorded %+v (err %v), want one core without identity", sb, err)
	}
	e, log := newLoggedEnv(t, cache, fd)
	e.create("C1", "wb", "Cache", "Core")
	if l := lineWith(log.String(), "level=INFO", "core identity not recorded"); !strings.Contains(l, fd.Identity()) {
		t.Errorf("no log line for the unknown identity:\n%s", log)
	}
	vol, _ := e.reg.Lookup("C1")
	got := make([]byte, len(data))
	if err := vol.ReadAt(got, 0); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("dirty data not served (err %v)", err)
	}
	if sb, err := ocf.Probe(cache); err != nil || sb.Cores[0].Identity != fd.Identity() {
		t.Errorf("identity recorded after the attach: %+v (err %v), want %q", sb.Cores, err, fd.Identity())
	}
}

// anonymous hides a device's optional abilities, its identity among them.
type anonymous struct{ bdev.Device }

func mallocDev(t *testing.T, name string, mib int) *malloc.Device {
	t.Helper()
	d, err := malloc.New(name, [16]byte{}, 512, uint64(mib)<<20/512)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// lineWith returns the first line of log containing every one of subs.
func lineWith(log string, subs ...string) string {
	for _, l := range strings.Split(log, "\n") {
		ok := true
		for _, s := range subs {
			ok = ok && strings.Contains(l, s)
		}
		if ok {
			return l
		}
	}
	return ""
}
