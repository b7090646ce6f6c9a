package lint

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// outsidePath matches text pointing at files that exist on one developer's
// machine and not in the repository:
//
//   - "../shared" (the directory beside the checkout that held the project's
//     planning notes; users never have it);
//   - an absolute path under a root where a developer's own files live:
//     /work, /home, /root, /Users, /opt, /workspace.
//
// Absolute paths are otherwise allowed: the system's own roots (/dev/,
// /proc/, /sys/, /tmp/, /usr/, /etc/, /var/, /run/, /srv/, /mnt/) are where
// the daemon's defaults and the docs' examples live, and the test cannot
// tell a file system path from a cgroup path, a metric name or an awk
// pattern, so it flags only the roots above rather than allowing a list.
// URLs are not paths: a match right after "://" or inside one is skipped.
// A home directory is allowed as an obvious placeholder, /home/me or
// /home/u. The checkout's own absolute path is flagged wherever it is.
var outsidePath = regexp.MustCompile(`\.\./shared\b|(^|[^A-Za-z0-9_.:/-])/(work|home|root|Users|opt|workspace)/([A-Za-z0-9_.-]*)`)

// placeholderHomes are home directories that are obviously examples.
var placeholderHomes = map[string]bool{"me": true, "u": true}

// selfFile names what the rule flags, as its examples; it is not checked.
const selfFile = "internal/lint/paths_test.go"

// checkedFile reports whether path (relative to the module root) is a doc
// or source file the rule applies to.
func checkedFile(path string) bool {
	base := filepath.Base(path)
	switch {
	case strings.HasSuffix(base, ".md"), strings.HasSuffix(base, ".go"), strings.HasSuffix(base, ".sh"):
		return true
	case base == "Makefile":
		return true
	case strings.HasPrefix(filepath.ToSlash(path), ".ci/"):
		return true
	}
	return false
}

// repoFiles lists the files git tracks or would track (new files not yet
// added included, ignored ones not), relative to the module root.
func repoFiles(t *testing.T, root string) []string {
	t.Helper()
	if _, err := os.Stat(filepath.Join(root, ".git")); err != nil {
		// An exported tree (git archive, a release tarball) has no index:
		// every file in it is the repository's.
		return walkFiles(t, root)
	}
	cmd := exec.Command("git", "ls-files", "--cached", "--others", "--exclude-standard", "-z")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("git ls-files in %s: %v", root, err)
	}
	var files []string
	for _, f := range bytes.Split(out, []byte{0}) {
		if len(f) > 0 {
			files = append(files, string(f))
		}
	}
	return files
}

// walkFiles lists the regular files below root, relative to it, leaving
// out what .gitignore names: the daemon's build output and data, test
// binaries and profiles.
func walkFiles(t *testing.T, root string) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		name := d.Name()
		if d.IsDir() {
			if rel == "bin" || rel == "blockcache-data" || (name != "." && strings.HasPrefix(name, ".") && name != ".ci") {
				return filepath.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() || rel == "blockcache" || strings.HasSuffix(name, ".test") || strings.HasSuffix(name, ".prof") {
			return nil
		}
		files = append(files, rel)
		return nil
	})
	if err != nil {
		t.Fatalf("walk %s: %v", root, err)
	}
	return files
}

// outsideMarks are substrings every match of outsidePath contains: a file
// without any of them (or the checkout's path) needs no closer look.
var outsideMarks = [][]byte{[]byte("../shared"), []byte("/work/"), []byte("/home/"), []byte("/root/"), []byte("/Users/"), []byte("/opt/"), []byte("/workspace/")}

// mayPointOutside reports whether data holds one of outsideMarks or root.
func mayPointOutside(data []byte, root string) bool {
	if bytes.Contains(data, []byte(root)) {
		return true
	}
	for _, m := range outsideMarks {
		if bytes.Contains(data, m) {
			return true
		}
	}
	return false
}

// outsideRefs returns the references outside the repository in one line
// of text; root is the checkout's absolute path.
func outsideRefs(line, root string) []string {
	var found []string
	if strings.Contains(line, root+"/") || strings.HasSuffix(line, root) {
		found = append(found, root)
	}
	for _, m := range outsidePath.FindAllStringSubmatch(line, -1) {
		if m[2] == "home" && placeholderHomes[strings.TrimRight(m[3], ".")] {
			continue
		}
		found = append(found, strings.TrimLeft(m[0], " \t\"'`(=,[<>*|;{"))
	}
	return found
}

// TestNoPathsOutsideRepo fails when a doc or source file points outside
// the repository (see outsidePath): the docs must stand on their own.
func TestNoPathsOutsideRepo(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, rel := range repoFiles(t, root) {
		if !checkedFile(rel) || filepath.ToSlash(rel) == selfFile {
			continue
		}
		data, err := os.ReadFile(filepath.Join(root, rel))
		if os.IsNotExist(err) {
			continue // deleted in the working tree, not yet in the index
		}
		if err != nil {
			t.Fatal(err)
		}
		checked++
		if !mayPointOutside(data, root) {
			continue
		}
		for n, line := range strings.Split(string(data), "\n") {
			for _, ref := range outsideRefs(line, root) {
				t.Errorf("%s:%d points outside the repository: %q", rel, n+1, ref)
			}
		}
	}
	if checked < 100 {
		t.Fatalf("checked only %d files; is the listing broken?", checked)
	}
}

// TestOutsideRefs pins the rule on examples of what it flags and allows.
func TestOutsideRefs(t *testing.T) {
	const root = "/src/checkout"
	for line, want := range map[string]int{
		"see ../shared/spec/style.md":                 1,
		"read `/work/shared/spec/architecture.md`":    1,
		`os.ReadFile("/home/alice/notes.txt")`:        1,
		"cd /root/blockcache && make":                 1,
		"open /Users/bob/x.img":                       1,
		"built in /src/checkout/cmd":                  1,
		"nbdinfo nbd://127.0.0.1:10809/cache0":        0,
		"https://example.org/work/x":                  0,
		"the socket /var/tmp/blockcache.sock":         0,
		"/dev/nbd0 and /proc/self/fd and /sys/block/": 0,
		"tls-certificates=/home/me/pki":               0,
		`DefaultTLSDirs(1000, "/home/u")`:             0,
		"internal/work/queue.go and a/home/b":         0,
		"cgroup 0::/docker/c1/app":                    0,
	} {
		if got := outsideRefs(line, root); len(got) != want {
			t.Errorf("%q: flagged %q, want %d reference(s)", line, got, want)
		}
	}
}
