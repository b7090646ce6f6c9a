package testutil

import (
	"fmt"
	"runtime"
	"strings"
	"testing"
)

func TestRun(t *testing.T) {
	out := Run(t, []string{"TESTUTIL_X=42"}, "sh", "-c", "echo $TESTUTIL_X; echo err >&2")
	if out != "42\nerr\n" {
		t.Fatalf("output %q, want the environment's value and stderr", out)
	}
	out, err := RunErr(t, nil, "sh", "-c", "echo no; exit 3")
	if err == nil || !strings.Contains(err.Error(), "exit status 3") || out != "no\n" {
		t.Fatalf("RunErr = %q, %v; want the output and exit status 3", out, err)
	}
}

func TestRequireToolFails(t *testing.T) {
	ft := &fatalT{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		RequireTool(ft, "no-such-tool-blockcache")
	}()
	<-done
	if !strings.Contains(ft.msg, "no-such-tool-blockcache is not installed: run `make deps`") {
		t.Fatalf("RequireTool of a missing tool said %q", ft.msg)
	}
}

// fatalT records a Fatalf and ends its goroutine, as testing.T does.
type fatalT struct {
	testing.TB
	msg string
}

func (f *fatalT) Helper() {}
func (f *fatalT) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}
