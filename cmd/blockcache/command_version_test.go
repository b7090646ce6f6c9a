package main

import (
	"strings"
	"testing"
)

func TestVersion(t *testing.T) {
	r := runCLI(t, "", "version")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "blockcache version "+version+" (go") || strings.Contains(r.stdout, "daemon") {
		t.Errorf("version: exit %d, stdout %q", r.code, r.stdout)
	}
	d := startDaemon(t)
	out := d.ok(t, "version", "--daemon")
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[1], "daemon: ") || !strings.Contains(lines[1], testVersion) {
		t.Errorf("version --daemon printed %q", out)
	}
	if r := runCLI(t, "", "--version"); r.code != 0 || r.stdout != "blockcache version "+version+"\n" {
		t.Errorf("--version: exit %d, stdout %q", r.code, r.stdout)
	}
}
