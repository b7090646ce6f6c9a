package cpumask

import (
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in, want string
	}{
		{"0x1", "0"},
		{"0x3", "0-1"},
		{"3", "0-1"},
		{"0XF0", "4-7"},
		{"0x10000000000000001", "0,64"}, // past 64 bits
		{"[0]", "0"},
		{"[0,2-3]", "0,2-3"},
		{"[ 5 , 1-2 ]", "1-2,5"},
	} {
		set, err := Parse(tc.in)
		if err != nil {
			t.Errorf("Parse(%q): %v", tc.in, err)
			continue
		}
		if got := String(set); got != tc.want {
			t.Errorf("Parse(%q) = %s, want %s", tc.in, got, tc.want)
		}
	}
}

func TestParseRejects(t *testing.T) {
	for _, tc := range []struct {
		in, why string
	}{
		{"", "hexadecimal"},
		{"0x", "hexadecimal"},
		{"0x0", "no CPU"},
		{"zz", "hexadecimal"},
		{"-0x1", "hexadecimal"},
		{"0x-1", "hexadecimal"},
		{"[0,1", "must end with ']'"},
		{"[]", "not a CPU number"},
		{"[a]", "not a CPU number"},
		{"[-1]", "not a CPU number"},
		{"[3-1]", "runs backwards"},
		{"[100000]", "beyond"},
	} {
		_, err := Parse(tc.in)
		if err == nil || !strings.Contains(err.Error(), tc.why) {
			t.Errorf("Parse(%q) = %v, want an error saying %q", tc.in, err, tc.why)
		}
	}
}

// TestPin pins a child process (this test binary again) to one CPU: every
// thread of it must end up there, and GOMAXPROCS must be 1.
func TestPin(t *testing.T) {
	if os.Getenv("CPUMASK_TEST_CHILD") == "1" {
		pinChild(t)
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestPin$", "-test.v")
	cmd.Env = append(os.Environ(), "CPUMASK_TEST_CHILD=1")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "pinned:") {
		t.Fatalf("child: %v\n%s", err, out)
	}
}

func pinChild(t *testing.T) {
	var allowed unix.CPUSet
	if err := unix.SchedGetaffinity(0, &allowed); err != nil {
		t.Fatal(err)
	}
	last := -1
	for c := range maxCPUs {
		if allowed.IsSet(c) {
			last = c
		}
	}
	// Threads that exist before Pin, busy in a system call, so that a
	// Pin that set only the threads it found could miss them.
	done := make(chan struct{})
	for range 4 {
		go func() {
			runtime.LockOSThread()
			<-done
		}()
	}
	defer close(done)
	var one unix.CPUSet
	one.Set(last)
	if err := Pin(one); err != nil { // re-executes this test once
		t.Fatal(err)
	}
	if n := runtime.GOMAXPROCS(0); n != 1 {
		t.Errorf("GOMAXPROCS %d after pinning to one CPU", n)
	}
	tids, err := threads()
	if err != nil {
		t.Fatal(err)
	}
	for _, tid := range tids {
		var got unix.CPUSet
		if err := unix.SchedGetaffinity(tid, &got); err != nil {
			continue // the thread exited
		}
		if got != one {
			t.Errorf("thread %d runs on %s, want %s", tid, String(got), String(one))
		}
	}
	var beyond unix.CPUSet
	beyond.Set(maxCPUs - 1)
	if err := Pin(beyond); err == nil || !strings.Contains(err.Error(), "not available") {
		t.Errorf("Pin to an unavailable CPU: %v", err)
	}
	t.Logf("pinned: %d threads on CPU %d", len(tids), last)
}

// threads lists the process's thread ids.
func threads() ([]int, error) {
	entries, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return nil, err
	}
	tids := make([]int, 0, len(entries))
	for _, e := range entries {
		if tid, err := strconv.Atoi(e.Name()); err == nil {
			tids = append(tids, tid)
		}
	}
	return tids, nil
}
