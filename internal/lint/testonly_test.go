package lint

import (
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
}

// TestTestOnlyImports keeps the test-support packages out of non-test code.
func TestTestOnlyImports(t *testing.T) {
	var files []goFile
	for _, f := range moduleFiles(t) {
		if !strings.HasSuffix(f.rel, "_test.go") && !isTestOnly(f.pkg) {
			files = append(files, f)
		}
	}
	eachModuleImport(t, files, func(f goFile, target string) {
		if isTestOnly(target) {
			t.Errorf("%s imports %s, which only tests may use", f.rel, module+target)
		}
	})
}

func isTestOnly(pkg string) bool {
	for _, p := range testOnly {
		if under(pkg, p) {
			return true
		}
	}
	return false
}
