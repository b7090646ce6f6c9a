package testutil

import (
	"os"
	"strconv"
	"strings"
	"testing"
)

// OpenFlags returns the open flags (fdinfo's "flags:") of each file
// descriptor that process pid (0: this process) has open on path.
func OpenFlags(t testing.TB, pid int, path string) []int {
	t.Helper()
	dir := "/proc/self"
	if pid != 0 {
		dir = "/proc/" + strconv.Itoa(pid)
	}
	fds, err := os.ReadDir(dir + "/fd")
	if err != nil {
		t.Fatal(err)
	}
	var flags []int
	for _, fd := range fds {
		if target, err := os.Readlink(dir + "/fd/" + fd.Name()); err != nil || target != path {
			continue
		}
		info, err := os.ReadFile(dir + "/fdinfo/" + fd.Name())
		if err != nil {
			t.Fatal(err)
		}
		for line := range strings.Lines(string(info)) {
			if v, ok := strings.CutPrefix(line, "flags:"); ok {
				f, err := strconv.ParseInt(strings.TrimSpace(v), 8, 64)
				if err != nil {
					t.Fatalf("%s fdinfo flags %q: %v", dir, v, err)
				}
				flags = append(flags, int(f))
			}
		}
	}
	return flags
}
