package file_test

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"blockcache/internal/bdev"
	"blockcache/internal/bdev/file"
)

// expectInUse checks that err refuses path as busy: ErrInUse, EBUSY, and a
// message naming the path and, if holder is not empty, the holder.
func expectInUse(t *testing.T, err error, path, holder string) {
	t.Helper()
	if !errors.Is(err, file.ErrInUse) || bdev.Errno(err) != syscall.EBUSY {
		t.Fatalf("Open = %v, want an error wrapping ErrInUse with errno EBUSY", err)
	}
	if want := path + " is in use"; !strings.Contains(err.Error(), want) {
		t.Fatalf("error %q does not say %q", err, want)
	}
	if holder != "" && !strings.Contains(err.Error(), holder) {
		t.Fatalf("error %q does not name the holder %q", err, holder)
	}
}

func TestSecondOpenerIsRefused(t *testing.T) {
	path := sparsePath(t, testSize)
	self := fmt.Sprintf("pid %d (this process)", os.Getpid())
	d := mustOpen(t, path, file.Options{})
	for _, ro := range []bool{false, true} {
		_, err := file.Open("AIO1", path, file.Options{ReadOnly: ro})
		expectInUse(t, err, path, self)
		if !strings.Contains(err.Error(), `"AIO1"`) {
			t.Errorf("error %q does not name the device being opened", err)
		}
	}
	// The refused opens changed nothing: the holder still works, and the
	// file is free once it is closed.
	if err := d.WriteAt(make([]byte, 512), 0, true); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	mustOpen(t, path, file.Options{})
}

func TestReadOnlyOpenersShare(t *testing.T) {
	path := sparsePath(t, testSize)
	r1 := mustOpen(t, path, file.Options{ReadOnly: true})
	mustOpen(t, path, file.Options{ReadOnly: true})
	_, err := file.Open("AIO1", path, file.Options{})
	expectInUse(t, err, path, fmt.Sprintf("pid %d", os.Getpid()))
	r1.Close()
	if _, err := file.Open("AIO1", path, file.Options{}); !errors.Is(err, file.ErrInUse) {
		t.Fatalf("writable open with one reader left = %v, want ErrInUse", err)
	}
}

// TestMain doubles as the lock holder of TestHolderInAnotherProcess: run
// with BLOCKCACHE_HOLD=PATH, the test binary opens PATH, says "held" and
// keeps it until its stdin closes.
func TestMain(m *testing.M) {
	path := os.Getenv("BLOCKCACHE_HOLD")
	if path == "" {
		os.Exit(m.Run())
	}
	d, err := file.Open("held", path, file.Options{})
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	fmt.Println("held")
	bufio.NewReader(os.Stdin).ReadString('\n')
	d.Close()
	os.Exit(0)
}

func TestHolderInAnotherProcess(t *testing.T) {
	path := sparsePath(t, testSize)
	child := exec.Command(os.Args[0])
	child.Env = append(os.Environ(), "BLOCKCACHE_HOLD="+path)
	stdin, err := child.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	defer child.Wait()
	defer stdin.Close()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || line != "held\n" {
		t.Fatalf("holder process said %q (%v), want \"held\"", line, err)
	}
	_, err = file.Open("AIO0", path, file.Options{ReadOnly: true})
	comm := filepath.Base(os.Args[0]) // the kernel keeps the first 15 bytes
	comm = comm[:min(len(comm), 15)]
	expectInUse(t, err, path, fmt.Sprintf("%s pid %d", comm, child.Process.Pid))
	if strings.Contains(err.Error(), "this process") {
		t.Fatalf("error %q calls another process this one", err)
	}
	stdin.Close()
	if err := child.Wait(); err != nil {
		t.Fatalf("holder process: %v", err)
	}
	mustOpen(t, path, file.Options{})
}

func TestBlockDeviceExclusive(t *testing.T) {
	dev := loopDevice(t, testSize, 512)
	// Another exclusive opener that takes no lock, as a mount or a device
	// mapper table would hold it.
	fd, err := unix.Open(dev, unix.O_RDONLY|unix.O_EXCL|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = file.Open("AIO0", dev, file.Options{})
	unix.Close(fd)
	expectInUse(t, err, dev, "")
	if !strings.Contains(err.Error(), "mounted, or opened exclusively") {
		t.Fatalf("error %q does not say how a block device is held", err)
	}
	d := mustOpen(t, dev, file.Options{})
	if _, err := file.Open("AIO1", dev, file.Options{ReadOnly: true}); !errors.Is(err, file.ErrInUse) {
		t.Fatalf("second open of a held block device = %v, want ErrInUse", err)
	}
	d.Close()
}

// TestSpecialFilesRefused opens a FIFO, a socket, a character device and a
// directory: each is refused at once (a FIFO must not block the open) with
// EINVAL and a message naming what it is.
func TestSpecialFilesRefused(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := unix.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	tests := []struct{ path, kind string }{
		{fifo, "a FIFO"},
		{sock, "a socket"},
		{"/dev/null", "a character device"},
		{dir, "a directory"},
	}
	for _, tc := range tests {
		for _, ro := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/readonly=%v", tc.kind, ro), func(t *testing.T) {
				done := make(chan error, 1)
				go func() {
					d, err := file.Open("AIO0", tc.path, file.Options{ReadOnly: ro})
					if err == nil {
						d.Close()
					}
					done <- err
				}()
				select {
				case err = <-done:
				case <-time.After(5 * time.Second):
					t.Fatalf("Open of %s still blocked after 5s", tc.kind)
				}
				if !errors.Is(err, bdev.ErrInvalidIO) || bdev.Errno(err) != syscall.EINVAL {
					t.Fatalf("Open = %v, want ErrInvalidIO (EINVAL)", err)
				}
				if want := tc.kind + ", not a regular file or block device"; !strings.Contains(err.Error(), want) {
					t.Fatalf("error %q does not say %q", err, want)
				}
			})
		}
	}
}
