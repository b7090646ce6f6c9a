package sysmem

import (
	"bufio"
	"bytes"
	"os"
	"path"
	"strconv"
	"strings"
)

// cgroupFiles names the files of one cgroup version: the limit, the usage,
// and the memory.stat key of the inactive file cache, which the kernel
// reclaims before it fails an allocation (MemAvailable counts it too).
type cgroupFiles struct {
	limit, usage, inactiveKey string
	unlimited                 string // the limit file's word for "no limit", if any
}

var (
	cgroupV2 = cgroupFiles{limit: "memory.max", usage: "memory.current", inactiveKey: "inactive_file", unlimited: "max"}
	cgroupV1 = cgroupFiles{limit: "memory.limit_in_bytes", usage: "memory.usage_in_bytes", inactiveKey: "total_inactive_file"}
)

// cgroupLimits returns the room left under each memory limit that applies
// to the process: every cgroup from its own up to the root of the mounted
// hierarchy, v2 (the unified hierarchy) and v1 (the memory controller) alike.
func (p Probe) cgroupLimits() []Available {
	var out []Available
	for _, dir := range p.cgroupDirs() {
		for d := dir.path; ; d = path.Dir(d) {
			if a, ok := p.cgroupRoom(d, dir.files); ok {
				out = append(out, a)
			}
			if d == dir.mount || d == "/" || d == "." {
				break
			}
		}
	}
	return out
}

// cgroupDir is the directory of the process's cgroup in one mounted
// hierarchy.
type cgroupDir struct {
	path  string // the process's cgroup directory
	mount string // where the hierarchy is mounted; the walk stops there
	files cgroupFiles
}

// cgroupDirs finds the process's memory cgroups from /proc/self/cgroup
// ("0::/path" for v2, "N:...memory...:/path" for v1) and the mount points of
// those hierarchies from /proc/self/mountinfo.
func (p Probe) cgroupDirs() []cgroupDir {
	b, err := os.ReadFile(p.path("/proc/self/cgroup"))
	if err != nil {
		return nil
	}
	var v2Path, v1Path string
	haveV2, haveV1 := false, false
	for _, line := range strings.Split(string(b), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		switch {
		case parts[0] == "0" && parts[1] == "":
			v2Path, haveV2 = parts[2], true
		case hasWord(parts[1], ",", "memory"):
			v1Path, haveV1 = parts[2], true
		}
	}
	var out []cgroupDir
	for _, m := range p.cgroupMounts() {
		switch {
		case m.fstype == "cgroup2" && haveV2:
			if d, ok := m.dirOf(v2Path); ok {
				out = append(out, cgroupDir{path: d, mount: m.point, files: cgroupV2})
			}
		case m.fstype == "cgroup" && haveV1 && hasWord(m.superOpts, ",", "memory"):
			if d, ok := m.dirOf(v1Path); ok {
				out = append(out, cgroupDir{path: d, mount: m.point, files: cgroupV1})
			}
		}
	}
	return out
}

// mount is one cgroup line of /proc/self/mountinfo.
type mount struct {
	root      string // the hierarchy's directory mounted there
	point     string
	fstype    string
	superOpts string
}

// dirOf maps a cgroup path as /proc/self/cgroup gives it to a directory
// under the mount point, or reports that the mount does not show it.
func (m mount) dirOf(cg string) (string, bool) {
	if m.root == "/" {
		return path.Join(m.point, cg), true
	}
	if rel, ok := strings.CutPrefix(cg, m.root); ok && (rel == "" || rel[0] == '/') {
		return path.Join(m.point, rel), true
	}
	return "", false
}

// cgroupMounts lists the cgroup and cgroup2 mounts. A mountinfo line is
// "ID PARENT MAJ:MIN ROOT POINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTS".
func (p Probe) cgroupMounts() []mount {
	b, err := os.ReadFile(p.path("/proc/self/mountinfo"))
	if err != nil {
		return nil
	}
	var out []mount
	for _, line := range strings.Split(string(b), "\n") {
		pre, post, ok := strings.Cut(line, " - ")
		if !ok {
			continue
		}
		f, g := strings.Fields(pre), strings.Fields(post)
		if len(f) < 5 || len(g) < 3 || (g[0] != "cgroup" && g[0] != "cgroup2") {
			continue
		}
		out = append(out, mount{root: unescape(f[3]), point: unescape(f[4]), fstype: g[0], superOpts: g[2]})
	}
	return out
}

// cgroupRoom reads one cgroup's limit and usage. It reports false when the
// cgroup has no limit file (the root of a hierarchy) or no limit.
func (p Probe) cgroupRoom(dir string, f cgroupFiles) (Available, bool) {
	lim, err := os.ReadFile(p.path(path.Join(dir, f.limit)))
	if err != nil {
		return Available{}, false
	}
	word := strings.TrimSpace(string(lim))
	if f.unlimited != "" && word == f.unlimited {
		return Available{}, false
	}
	limit, err := strconv.ParseInt(word, 10, 64)
	if err != nil || limit < 0 {
		return Available{}, false
	}
	var usage int64
	if b, err := os.ReadFile(p.path(path.Join(dir, f.usage))); err == nil {
		usage, _ = strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	} else if !isNotExist(err) {
		return Available{}, false
	}
	usage -= p.statValue(path.Join(dir, "memory.stat"), f.inactiveKey)
	room := limit - max(usage, 0)
	return Available{Bytes: max(room, 0), Source: f.limit + " less usage of cgroup " + dir}, true
}

// statValue returns the value of key in a memory.stat file, or 0.
func (p Probe) statValue(file, key string) int64 {
	b, err := os.ReadFile(p.path(file))
	if err != nil {
		return 0
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), " ")
		if ok && k == key {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err == nil && n > 0 {
				return n
			}
			return 0
		}
	}
	return 0
}

// hasWord reports whether list, split by sep, contains w.
func hasWord(list, sep, w string) bool {
	for _, x := range strings.Split(list, sep) {
		if x == w {
			return true
		}
	}
	return false
}

// unescape undoes mountinfo's octal escapes (\040 for a space).
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
