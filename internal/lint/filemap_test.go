package lint

import (
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// fileMapLine is a line of a package comment's file map: an indented line
// starting with a Go file name.
var fileMapLine = regexp.MustCompile(`(?m)^\t+[a-z0-9_]+\.go\b`)

// goFileName is a Go file name in running text.
var goFileName = regexp.MustCompile(`[a-z0-9_]+\.go\b`)

// TestFileMapsComplete checks that a package comment with a file map (an
// indented list of the package's files, as internal/ocf and internal/nbd
// have) names every non-test Go file of its package, so the map cannot
// fall behind as files are added.
func TestFileMapsComplete(t *testing.T) {
	maps := 0
	for _, dir := range packageDirs(t) {
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		var files []string
		var doc string
		for _, e := range entries {
			name := e.Name()
			if e.IsDir() || !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") {
				continue
			}
			files = append(files, name)
			f, err := parser.ParseFile(token.NewFileSet(), filepath.Join(dir, name), nil, parser.ParseComments|parser.PackageClauseOnly)
			if err != nil {
				t.Fatal(err)
			}
			if f.Doc != nil {
				doc += f.Doc.Text()
			}
		}
		if !fileMapLine.MatchString(doc) {
			continue
		}
		maps++
		named := map[string]bool{}
		for _, w := range goFileName.FindAllString(doc, -1) {
			named[w] = true
		}
		for _, name := range files {
			if !named[name] {
				t.Errorf("%s: the package comment's file map does not name %s", dir, name)
			}
		}
	}
	if maps < 2 {
		t.Fatalf("found %d file maps; internal/ocf and internal/nbd have one each", maps)
	}
}

// packageDirs lists the directories of the module holding Go files.
func packageDirs(t *testing.T) []string {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	var dirs []string
	for _, f := range moduleFiles(t) {
		dir := filepath.Join(root, f.pkg)
		if !seen[dir] {
			seen[dir] = true
			dirs = append(dirs, dir)
		}
	}
	return dirs
}
