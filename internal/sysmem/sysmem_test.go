package sysmem

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// fakeRoot writes files (path -> content) under a temporary root.
func fakeRoot(t *testing.T, files map[string]string) Probe {
	t.Helper()
	root := t.TempDir()
	for p, content := range files {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return Probe{Root: root}
}

// fakeCgroupV2 is a fake root whose process is in cgroup v2 group (under
// /sys/fs/cgroup) with memory.max limit and memory.current current.
func fakeCgroupV2(t *testing.T, group, limit, current string) Probe {
	t.Helper()
	return fakeRoot(t, map[string]string{
		"/proc/meminfo":                               meminfo,
		"/proc/self/cgroup":                           "0::/" + group + "\n",
		"/proc/self/mountinfo":                        mountinfoV2,
		"/sys/fs/cgroup/" + group + "/memory.max":     limit + "\n",
		"/sys/fs/cgroup/" + group + "/memory.current": current + "\n",
	})
}

const meminfo = `MemTotal:       24683784 kB
MemFree:         1000000 kB
MemAvailable:    2000000 kB
Buffers:          100000 kB
Cached:          5000000 kB
HugePages_Total:       0
`

const mountinfoV2 = `24 30 0:22 / /sys rw,nosuid - sysfs sysfs rw
35 24 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec - cgroup2 cgroup2 rw,nsdelegate
`

const mountinfoV1 = `24 30 0:22 / /sys rw,nosuid - sysfs sysfs rw
40 24 0:35 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory
41 24 0:36 / /sys/fs/cgroup/cpu rw,nosuid - cgroup cgroup rw,cpu
`

func TestMemAvailable(t *testing.T) {
	p := fakeRoot(t, map[string]string{"/proc/meminfo": meminfo})
	a, err := p.Available()
	if err != nil {
		t.Fatal(err)
	}
	if a.Bytes != 2000000*1024 || !strings.Contains(a.Source, "MemAvailable") {
		t.Fatalf("got %+v, want MemAvailable 2000000 kB", a)
	}
}

func TestMemAvailableFallback(t *testing.T) {
	old := "MemTotal: 1000 kB\nMemFree: 100 kB\nBuffers: 10 kB\nCached: 1 kB\n"
	a, err := fakeRoot(t, map[string]string{"/proc/meminfo": old}).Available()
	if err != nil {
		t.Fatal(err)
	}
	if a.Bytes != 111*1024 {
		t.Fatalf("got %d, want MemFree+Buffers+Cached = %d", a.Bytes, 111*1024)
	}
}

func TestMeminfoErrors(t *testing.T) {
	if _, err := fakeRoot(t, nil).Available(); err == nil {
		t.Fatal("no /proc/meminfo: want an error")
	}
	if _, err := fakeRoot(t, map[string]string{"/proc/meminfo": "MemTotal: 10 kB\n"}).Available(); err == nil {
		t.Fatal("no MemAvailable nor MemFree: want an error")
	}
	if _, err := fakeRoot(t, map[string]string{"/proc/meminfo": "MemAvailable: lots kB\n"}).Available(); err == nil {
		t.Fatal("bad number: want an error")
	}
	// An unreadable probe refuses nothing.
	if err := fakeRoot(t, nil).Check(1 << 62); err != nil {
		t.Fatalf("Check without figures = %v, want nil", err)
	}
}

func TestCgroupV2Limit(t *testing.T) {
	p := fakeRoot(t, map[string]string{
		"/proc/meminfo":                            meminfo,
		"/proc/self/cgroup":                        "0::/app/worker\n",
		"/proc/self/mountinfo":                     mountinfoV2,
		"/sys/fs/cgroup/app/worker/memory.max":     "max\n",
		"/sys/fs/cgroup/app/worker/memory.current": "5000\n",
		"/sys/fs/cgroup/app/memory.max":            "1048576\n",
		"/sys/fs/cgroup/app/memory.current":        "524288\n",
		"/sys/fs/cgroup/app/memory.stat":           "anon 100\ninactive_file 24288\nactive_file 7\n",
	})
	a, err := p.Available()
	if err != nil {
		t.Fatal(err)
	}
	// The parent's limit applies: 1 MiB - (512 KiB - 24288 inactive file).
	if want := int64(1048576 - (524288 - 24288)); a.Bytes != want {
		t.Fatalf("got %+v, want %d", a, want)
	}
	if a.Source != "memory.max less usage of cgroup /sys/fs/cgroup/app" {
		t.Fatalf("source %q", a.Source)
	}
	err = p.Check(600000)
	var se *ShortError
	if !errors.As(err, &se) || se.Need != 600000 || se.Available != a {
		t.Fatalf("Check(600000) = %v, want a ShortError with the numbers", err)
	}
	if !errors.Is(err, ErrNotEnough) || !errors.Is(err, syscall.ENOMEM) {
		t.Fatalf("%v does not match ErrNotEnough and ENOMEM", err)
	}
	var errno syscall.Errno
	if !errors.As(err, &errno) || errno != syscall.ENOMEM {
		t.Fatalf("errors.As found errno %v, want ENOMEM", errno)
	}
	for _, s := range []string{"600000 bytes requested", "548576 available", "cgroup /sys/fs/cgroup/app"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("message %q lacks %q", err, s)
		}
	}
	if err := p.Check(500000); err != nil {
		t.Fatalf("Check(500000) = %v, want nil", err)
	}
}

func TestCgroupV2Unlimited(t *testing.T) {
	p := fakeCgroupV2(t, "app", "max", "999999999999")
	a, err := p.Available()
	if err != nil {
		t.Fatal(err)
	}
	if a.Bytes != 2000000*1024 {
		t.Fatalf("an unlimited cgroup limited memory: %+v", a)
	}
}

func TestCgroupOverMemAvailable(t *testing.T) {
	// A limit above MemAvailable does not raise what is available, and usage
	// above the limit leaves zero, not a negative figure.
	p := fakeCgroupV2(t, "a", "100", "200")
	a, _ := p.Available()
	if a.Bytes != 0 {
		t.Fatalf("usage over the limit: got %d, want 0", a.Bytes)
	}
	p = fakeCgroupV2(t, "a", "999999999999", "0")
	if a, _ := p.Available(); a.Bytes != 2000000*1024 {
		t.Fatalf("a high limit raised the figure: %+v", a)
	}
}

func TestCgroupV1Limit(t *testing.T) {
	p := fakeRoot(t, map[string]string{
		"/proc/meminfo":        meminfo,
		"/proc/self/cgroup":    "5:cpu,cpuacct:/x\n4:memory:/batch/job1\n0::/\n",
		"/proc/self/mountinfo": mountinfoV1,
		"/sys/fs/cgroup/memory/batch/job1/memory.limit_in_bytes": "9223372036854771712\n",
		"/sys/fs/cgroup/memory/batch/job1/memory.usage_in_bytes": "4096\n",
		"/sys/fs/cgroup/memory/batch/memory.limit_in_bytes":      "2097152\n",
		"/sys/fs/cgroup/memory/batch/memory.usage_in_bytes":      "1048576\n",
		"/sys/fs/cgroup/memory/batch/memory.stat":                "cache 10\ntotal_inactive_file 4096\n",
		"/sys/fs/cgroup/memory/memory.limit_in_bytes":            "9223372036854771712\n",
	})
	a, err := p.Available()
	if err != nil {
		t.Fatal(err)
	}
	if want := int64(2097152 - (1048576 - 4096)); a.Bytes != want || !strings.Contains(a.Source, "memory.limit_in_bytes") {
		t.Fatalf("got %+v, want %d from memory.limit_in_bytes", a, want)
	}
}

func TestCgroupMountRootNotSlash(t *testing.T) {
	// Inside a container the hierarchy may be mounted from a sub-directory:
	// /proc/self/cgroup says /docker/c1/app, the mount shows /docker/c1.
	mi := "35 24 0:30 /docker/c1 /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n"
	p := fakeRoot(t, map[string]string{
		"/proc/meminfo":                     meminfo,
		"/proc/self/cgroup":                 "0::/docker/c1/app\n",
		"/proc/self/mountinfo":              mi,
		"/sys/fs/cgroup/app/memory.max":     "4096\n",
		"/sys/fs/cgroup/app/memory.current": "1024\n",
	})
	if a, _ := p.Available(); a.Bytes != 3072 {
		t.Fatalf("got %+v, want 3072 from /sys/fs/cgroup/app", a)
	}
}

func TestCgroupMissingFilesIgnored(t *testing.T) {
	p := fakeRoot(t, map[string]string{
		"/proc/meminfo":        meminfo,
		"/proc/self/cgroup":    "0::/gone\n",
		"/proc/self/mountinfo": mountinfoV2,
	})
	if a, err := p.Available(); err != nil || a.Bytes != 2000000*1024 {
		t.Fatalf("got %+v, %v; want MemAvailable", a, err)
	}
}

func TestUnescape(t *testing.T) {
	if got := unescape(`/mnt/my\040dir\`); got != `/mnt/my dir\` {
		t.Fatalf("unescape = %q", got)
	}
}

func TestRealMachine(t *testing.T) {
	a, err := Probe{}.Available()
	if err != nil {
		t.Fatalf("reading this machine's figures: %v", err)
	}
	if a.Bytes <= 0 {
		t.Fatalf("this machine has %+v available", a)
	}
	if err := (Probe{}).Check(1 << 62); !errors.Is(err, ErrNotEnough) {
		t.Fatalf("Check(4 EiB) = %v", err)
	}
}
