package testutil

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// ToolTimeout bounds every run of an external tool: a client that hangs
// is killed and its test fails.
const ToolTimeout = 90 * time.Second

// RequireTool returns the path of an installed tool, failing the test
// otherwise: a machine without the tools cannot pass by skipping.
func RequireTool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s is not installed: run `make deps` (it installs libnbd-bin qemu-utils fio nbdkit python3-libnbd)", name)
	}
	return p
}

// Run runs tool name with args and env added to the environment, and
// returns its combined output, failing the test if it exits non-zero.
func Run(t testing.TB, env []string, name string, args ...string) string {
	t.Helper()
	out, err := RunErr(t, env, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

// RunErr runs tool name as Run does and returns its combined output and
// exit error. It runs in a temporary directory (fio leaves state files in
// its working directory).
func RunErr(t testing.TB, env []string, name string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(RequireTool(t, name), args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Dir = t.TempDir()
	return RunCmd(t, cmd)
}

// RunCmd runs cmd, set up by the caller, and returns its combined output
// and exit error; it is killed after ToolTimeout.
func RunCmd(t testing.TB, cmd *exec.Cmd) (string, error) {
	t.Helper()
	cmd.WaitDelay = time.Second
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	timer := time.AfterFunc(ToolTimeout, func() { cmd.Process.Kill() })
	defer timer.Stop()
	err := cmd.Wait()
	return out.String(), err
}

// NbdshEnv returns the environment nbdsh needs to find a python3 with the
// libnbd bindings: nbdsh runs `python3 -m nbd`, and a python3 earlier on
// PATH (pyenv, venv) may lack them.
func NbdshEnv(t testing.TB) []string {
	t.Helper()
	RequireTool(t, "nbdsh")
	for _, py := range []string{"python3", "/usr/bin/python3"} {
		p, err := exec.LookPath(py)
		if err != nil {
			continue
		}
		if exec.Command(p, "-c", "import nbd").Run() == nil {
			return []string{"PATH=" + filepath.Dir(p) + string(os.PathListSeparator) + os.Getenv("PATH")}
		}
	}
	t.Fatal("no python3 can import nbd: run `make deps` (python3-libnbd)")
	return nil
}
