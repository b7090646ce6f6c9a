// Package lint holds tests that enforce the project's conventions on its own
// source: the one-way package graph, panics that carry errors, and docs and
// sources that point nowhere outside the repository.
package lint

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

const module = "blockcache/"

// forbidden maps a package (by path under the module) to module packages it
// must not import, directly. Prefix matches cover sub-packages.
var forbidden = map[string][]string{
	"internal/bdev":      {"internal/ocf", "internal/vbdev", "internal/nbd", "internal/jsonrpc", "internal/rpc", "internal/config", "internal/metrics", "internal/perf", "cmd"},
	"internal/ocf":       {"internal/vbdev", "internal/nbd", "internal/jsonrpc", "internal/rpc", "internal/rpcclient", "internal/config", "internal/metrics", "cmd"},
	"internal/nbd":       {"internal/ocf", "internal/vbdev", "internal/jsonrpc", "internal/rpc", "internal/config", "internal/metrics", "cmd"},
	"internal/jsonrpc":   {"internal/bdev", "internal/ocf", "internal/vbdev", "internal/nbd", "internal/rpc", "internal/config", "cmd"},
	"internal/rpcclient": {"internal/bdev", "internal/ocf", "internal/vbdev", "internal/nbd", "internal/rpc", "internal/config", "cmd"},
	"internal/vbdev":     {"internal/nbd", "internal/jsonrpc", "internal/rpc", "internal/config", "internal/metrics", "cmd"},
	// perf drives bdevs through the Device interface alone; the command
	// builds them.
	"internal/perf": {"internal/ocf", "internal/vbdev", "internal/nbd", "internal/jsonrpc", "internal/rpc", "internal/daemon", "internal/metrics", "cmd"},
	// Leaves every layer may use.
	"internal/latency": {"internal/bdev", "internal/ocf", "internal/vbdev", "internal/nbd", "internal/rpc", "internal/metrics", "cmd"},
	"internal/aligned": {"internal/bdev", "internal/ocf", "internal/vbdev", "internal/nbd", "internal/rpc", "internal/metrics", "cmd"},
	"internal/pemfile": {"internal/bdev", "internal/ocf", "internal/vbdev", "internal/nbd", "internal/rpc", "internal/metrics", "cmd"},
	"internal/hrtimer": {"internal", "cmd"},
	"internal/poller":  {"internal", "cmd"},
	// The NBD wire format, which the server (internal/nbd) and the client
	// bdev (internal/bdev/nbdremote) share: it imports nothing of the module.
	"internal/nbdproto": {"internal", "cmd"},
	// The test client encodes the wire itself, so that a mistake in
	// nbdproto cannot hide behind the same mistake in the client.
	"internal/nbd/nbdclient": {"internal/nbdproto"},
	// Test support every package's tests may use (testonly_test.go).
	"internal/testutil": {"internal/bdev", "internal/ocf", "internal/vbdev", "internal/nbd", "internal/rpc", "internal/metrics", "cmd"},
}

type goFile struct {
	rel  string // path relative to the module root
	pkg  string // directory relative to the module root
	file *ast.File
	fset *token.FileSet
}

func moduleFiles(t *testing.T) []goFile {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("module root not found at %s: %v", root, err)
	}
	var files []goFile
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata") && path != root {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") {
			return nil
		}
		fset := token.NewFileSet()
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		files = append(files, goFile{rel: rel, pkg: filepath.ToSlash(filepath.Dir(rel)), file: f, fset: fset})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 10 {
		t.Fatalf("found only %d Go files; is the walk broken?", len(files))
	}
	return files
}

func under(pkg, prefix string) bool { return pkg == prefix || strings.HasPrefix(pkg, prefix+"/") }

// TestForbiddenImports keeps the package graph one-way: the engine knows
// nothing of transports, transports nothing of the engine.
func TestForbiddenImports(t *testing.T) {
	eachModuleImport(t, moduleFiles(t), func(f goFile, target string) {
		for owner, bans := range forbidden {
			if !under(f.pkg, owner) {
				continue
			}
			for _, ban := range bans {
				if under(target, ban) && !under(target, owner) {
					t.Errorf("%s imports %s: %s must not depend on %s", f.rel, module+target, owner, ban)
				}
			}
		}
	})
}

// eachModuleImport calls fn with each file of files and each module
// package it imports (its path under the module), and fails the test if
// there is none.
func eachModuleImport(t *testing.T, files []goFile, fn func(f goFile, target string)) {
	t.Helper()
	checked := 0
	for _, f := range files {
		for _, imp := range f.file.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			if target, ok := strings.CutPrefix(path, module); ok {
				checked++
				fn(f, target)
			}
		}
	}
	if checked == 0 {
		t.Fatal("no module imports checked")
	}
}

// TestPanicArgs rejects panics with bare strings: a panic carries an error
// (fmt.Errorf, errors.New) so recover sites can wrap and report it.
func TestPanicArgs(t *testing.T) {
	for _, f := range moduleFiles(t) {
		ast.Inspect(f.file, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok {
				return true
			}
			if id, ok := call.Fun.(*ast.Ident); !ok || id.Name != "panic" || len(call.Args) != 1 {
				return true
			}
			if lit, ok := call.Args[0].(*ast.BasicLit); ok && lit.Kind == token.STRING {
				t.Errorf("%s: panic with a bare string; panic with an error", f.fset.Position(call.Pos()))
			}
			return true
		})
	}
}
