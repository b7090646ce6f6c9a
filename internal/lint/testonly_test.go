package lint

import (
	"strconv"
	"strings"
	"testing"
)

// testOnly lists the packages that exist for tests: only _test.go files
// (and other test-support packages) may import them, so no test helper
// reaches the daemon.
var testOnly = []string{
	"internal/testutil",
	"internal/bdev/bdevtest",
	"internal/ocf/ocftest",
	"internal/nbd/tlstest",
}

// TestTestOnlyImports keeps the test-support packages out of non-test code.
func TestTestOnlyImports(t *testing.T) {
	checked := 0
	for _, f := range moduleFiles(t) {
		if strings.HasSuffix(f.rel, "_test.go") || isTestOnly(f.pkg) {
			continue
		}
		for _, imp := range f.file.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			if !strings.HasPrefix(path, module) {
				continue
			}
			checked++
			if target := strings.TrimPrefix(path, module); isTestOnly(target) {
				t.Errorf("%s imports %s, which only tests may use", f.rel, path)
			}
		}
	}
	if checked == 0 {
		t.Fatal("no module imports checked")
	}
}

func isTestOnly(pkg string) bool {
	for _, p := range testOnly {
		if under(pkg, p) {
			return true
		}
	}
	return false
}
