package rpc

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"blockcache/internal/bdev"
	"blockcache/internal/bdev/malloc"
	"blockcache/internal/jsonrpc"
	"blockcache/internal/nbd"
	"blockcache/internal/vbdev"
)

// syncBuffer is a log destination safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) count(substr string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Count(s.b.String(), substr)
}

// retryAPI is an API with only what bdev_nbd_client_create needs, its log
// and how often it reported a configuration change.
type retryAPI struct {
	*API
	log     *syncBuffer
	changes atomic.Int32
}

func newRetryAPI(t *testing.T) *retryAPI {
	t.Helper()
	r := &retryAPI{log: &syncBuffer{}}
	reg, log := bdev.NewRegistry(), slog.New(slog.NewTextHandler(r.log, nil))
	ocf := vbdev.NewManager(reg, log)
	t.Cleanup(ocf.Close)
	r.API = &API{svc: Services{Registry: reg, OCF: ocf, Log: log, OnChange: func() { r.changes.Add(1) }}, bases: newBaseTable(), exports: newExportTable()}
	r.nbdRetries = newNBDRetries(r.svc.OnChange)
	t.Cleanup(func() {
		r.StopNBDClientRetries()
		for _, b := range r.bases.list() {
			r.removeBase(b, "test over")
		}
	})
	return r
}

func (r *retryAPI) create(ctx context.Context, params string) (any, error) {
	return r.nbdClientCreate(ctx, json.RawMessage(params))
}

func (r *retryAPI) exists(name string) bool {
	_, err := r.svc.Registry.Lookup(name)
	return err == nil
}

// listed returns the bdev_nbd_client_create entries of framework_get_config
// for name.
func (r *retryAPI) listed(t *testing.T, name string) []nbdClientConfig {
	t.Helper()
	entries, err := r.SubsystemConfig("bdev")
	if err != nil {
		t.Fatal(err)
	}
	var out []nbdClientConfig
	for _, e := range entries {
		if c, ok := e.Params.(nbdClientConfig); ok && e.Method == "bdev_nbd_client_create" && c.Name == name {
			out = append(out, c)
		}
	}
	return out
}

// serveNBD serves a 1 MiB RAM export "disk" on the Unix socket sock until
// the returned function is called.
func serveNBD(t *testing.T, sock string) (stop func()) {
	t.Helper()
	srv, err := nbd.NewServer(slog.New(slog.DiscardHandler), nbd.Options{})
	if err != nil {
		t.Fatal(err)
	}
	dev, err := malloc.New("ram", uuid.New(), 512, 2048)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.AddExport(nbd.Export{Name: "disk", Device: dev}); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	var once sync.Once
	stop = func() {
		once.Do(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			srv.Shutdown(ctx)
			dev.Close()
		})
	}
	t.Cleanup(stop)
	return stop
}

func waitUntil(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(limit); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("%s: not within %v", what, limit)
		}
	}
}

func clientParams(name, sock string, extra string) string {
	return fmt.Sprintf(`{"name":%q,"uri":"nbd+unix:///disk?socket=%s","reconnect_delay_sec":1%s}`, name, sock, extra)
}

// TestNBDClientRetryAtStartup: a start-up create whose server is down
// succeeds, creates nothing, stays in the config and logs one warning;
// the bdev is created once the server is up, with one info line, and
// the config is persisted again.
func TestNBDClientRetryAtStartup(t *testing.T) {
	a := newRetryAPI(t)
	sock := filepath.Join(t.TempDir(), "nbd.sock")
	if _, err := a.create(AtStartup(t.Context()), clientParams("R0", sock, "")); err != nil {
		t.Fatalf("start-up create with the server down: %v, want success and a retry", err)
	}
	if a.exists("R0") {
		t.Fatal("R0 registered with its server down")
	}
	if got := a.listed(t, "R0"); len(got) != 1 || got[0].ReconnectDelaySec != 1 || got[0].CtrlrLossTimeoutSec != -1 || !strings.Contains(got[0].URI, sock) {
		t.Fatalf("config while retrying: %+v, want R0's entry once", got)
	}
	time.Sleep(1500 * time.Millisecond) // at least one more failed attempt
	if n := a.log.count("level=WARN"); n != 1 {
		t.Fatalf("%d warnings while retrying, want 1", n)
	}
	serveNBD(t, sock)
	waitUntil(t, 5*time.Second, "R0 is created once its server is up", func() bool { return a.exists("R0") })
	waitUntil(t, time.Second, "the config is persisted", func() bool { return a.changes.Load() == 1 })
	if got := a.listed(t, "R0"); len(got) != 1 || got[0].UUID == "" {
		t.Fatalf("config once connected: %+v, want R0's entry once, with its UUID", got)
	}
	if n := a.log.count("NBD client: connected; the bdev is created"); n != 1 {
		t.Fatalf("%d connected lines, want 1:\n%s", n, a.log.b.String())
	}
}

// TestNBDClientRetryDeleteStops: bdev_nbd_client_delete of a name being
// retried ends the retry and the entry: a server that comes up later is
// not connected to.
func TestNBDClientRetryDeleteStops(t *testing.T) {
	a := newRetryAPI(t)
	sock := filepath.Join(t.TempDir(), "nbd.sock")
	if _, err := a.create(AtStartup(t.Context()), clientParams("R0", sock, "")); err != nil {
		t.Fatal(err)
	}
	res, err := a.nbdClientDelete(t.Context(), json.RawMessage(`{"name":"R0"}`))
	if err != nil || res != true {
		t.Fatalf("delete of a retried bdev = %v, %v; want true", res, err)
	}
	if got := a.listed(t, "R0"); len(got) != 0 {
		t.Fatalf("config after the delete lists %+v", got)
	}
	serveNBD(t, sock)
	time.Sleep(2500 * time.Millisecond) // two reconnect delays
	if a.exists("R0") {
		t.Fatal("R0 was created after its delete")
	}
	var je *jsonrpc.Error
	if _, err := a.nbdClientDelete(t.Context(), json.RawMessage(`{"name":"R0"}`)); !errors.As(err, &je) || je.Code != -19 {
		t.Fatalf("second delete = %v, want -19", err)
	}
}

// TestNBDClientCreateReplacesRetry: a create by hand of a name being
// retried fails at once if its server is down, leaving the retry as it
// was; one that succeeds replaces it.
func TestNBDClientCreateReplacesRetry(t *testing.T) {
	a := newRetryAPI(t)
	dir := t.TempDir()
	sock, other := filepath.Join(dir, "nbd.sock"), filepath.Join(dir, "other.sock")
	if _, err := a.create(AtStartup(t.Context()), clientParams("R0", sock, "")); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err := a.create(t.Context(), clientParams("R0", other, `,"io_timeout_sec":7`))
	var je *jsonrpc.Error
	if !errors.As(err, &je) || je.Code != -2 || !strings.Contains(je.Data, "other.sock") || time.Since(start) > time.Second {
		t.Fatalf("create by hand with the server down = %v after %v, want -2 naming the socket at once", err, time.Since(start))
	}
	if got := a.listed(t, "R0"); len(got) != 1 || !strings.Contains(got[0].URI, "nbd.sock") || got[0].IOTimeoutSec != 30 {
		t.Fatalf("config after a failed create by hand: %+v, want the retried entry as it was", got)
	}
	serveNBD(t, other)
	if _, err := a.create(t.Context(), clientParams("R0", other, `,"io_timeout_sec":7`)); err != nil {
		t.Fatal(err)
	}
	if got := a.listed(t, "R0"); len(got) != 1 || !strings.Contains(got[0].URI, "other.sock") || got[0].IOTimeoutSec != 7 {
		t.Fatalf("config after the create by hand: %+v, want its entry only", got)
	}
	serveNBD(t, sock)
	time.Sleep(1500 * time.Millisecond)
	if n := a.log.count("NBD client: connected"); n != 0 {
		t.Fatal("the replaced retry connected too")
	}
}

// TestNBDClientNoRetry: a create by hand fails at once; a start-up create
// whose server answers but refuses the export, or with
// ctrlr_loss_timeout_sec 0, fails as well, with nothing retried.
func TestNBDClientNoRetry(t *testing.T) {
	a := newRetryAPI(t)
	dir := t.TempDir()
	down, up := filepath.Join(dir, "down.sock"), filepath.Join(dir, "up.sock")
	serveNBD(t, up)
	var je *jsonrpc.Error
	for _, tc := range []struct {
		ctx    context.Context
		params string
		code   int
	}{
		{t.Context(), clientParams("R0", down, ""), -2},
		{AtStartup(t.Context()), fmt.Sprintf(`{"name":"R0","uri":"nbd+unix:///disk?socket=%s","ctrlr_loss_timeout_sec":0}`, down), -2},
		{AtStartup(t.Context()), fmt.Sprintf(`{"name":"R0","uri":"nbd+unix:///nosuch?socket=%s"}`, up), -6},
	} {
		if _, err := a.create(tc.ctx, tc.params); !errors.As(err, &je) || je.Code != tc.code {
			t.Errorf("%s: %v, want %d", tc.params, err, tc.code)
		}
		if got := a.listed(t, "R0"); len(got) != 0 {
			t.Errorf("%s: listed %+v after a failure", tc.params, got)
		}
	}
}

// TestNBDClientRetryGivesUp: with ctrlr_loss_timeout_sec the retry ends,
// logged once, and the entry stays in the config for the next start;
// stopping the retries at shutdown keeps the entries too.
func TestNBDClientRetryGivesUp(t *testing.T) {
	a := newRetryAPI(t)
	dir := t.TempDir()
	sock := filepath.Join(dir, "nbd.sock")
	if _, err := a.create(AtStartup(t.Context()), clientParams("R0", sock, `,"ctrlr_loss_timeout_sec":2`)); err != nil {
		t.Fatal(err)
	}
	if _, err := a.create(AtStartup(t.Context()), clientParams("R1", filepath.Join(dir, "r1.sock"), "")); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 5*time.Second, "R0 gives up", func() bool { return a.log.count("gave up retrying") == 1 })
	serveNBD(t, sock)
	a.StopNBDClientRetries()
	serveNBD(t, filepath.Join(dir, "r1.sock"))
	time.Sleep(1500 * time.Millisecond)
	if a.exists("R0") || a.exists("R1") {
		t.Fatal("a bdev was created after its retry gave up or was stopped")
	}
	if len(a.listed(t, "R0")) != 1 || len(a.listed(t, "R1")) != 1 {
		t.Fatal("an entry left the config when its retry ended")
	}
}

// TestNBDClientRetryStopRacesCreate: daemon shutdown while creates by hand
// of a retried name keep failing stops the retry without a data race
// (run with -race) and keeps the entry.
func TestNBDClientRetryStopRacesCreate(t *testing.T) {
	for range 20 {
		a := newRetryAPI(t)
		dir := t.TempDir()
		if _, err := a.create(AtStartup(t.Context()), clientParams("R0", filepath.Join(dir, "nbd.sock"), "")); err != nil {
			t.Fatal(err)
		}
		by := clientParams("R0", filepath.Join(dir, "other.sock"), "")
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := a.create(t.Context(), by); err == nil {
					t.Error("create by hand with the server down succeeded")
					return
				}
			}
		}()
		time.Sleep(time.Millisecond)
		a.StopNBDClientRetries()
		close(stop)
		wg.Wait()
		if got := a.listed(t, "R0"); len(got) != 1 || !strings.Contains(got[0].URI, "nbd.sock") {
			t.Fatalf("config after shutdown: %+v, want the retried entry as it was", got)
		}
	}
}

// silentListener accepts connections on a Unix socket and never greets.
func silentListener(t *testing.T, sock string) {
	t.Helper()
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	var conns []net.Conn
	var mu sync.Mutex
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
}

// TestNBDClientCreateKeepsRetryListed: while a create by hand of a
// retried name is connecting, the config still lists the retried entry
// (a config saved meanwhile must not lose it), and after it failed too.
func TestNBDClientCreateKeepsRetryListed(t *testing.T) {
	a := newRetryAPI(t)
	dir := t.TempDir()
	sock, silent := filepath.Join(dir, "nbd.sock"), filepath.Join(dir, "silent.sock")
	silentListener(t, silent)
	if _, err := a.create(AtStartup(t.Context()), clientParams("R0", sock, "")); err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := a.create(t.Context(), clientParams("R0", silent, `,"io_timeout_sec":1`))
		errc <- err
	}()
	for end := time.Now().Add(700 * time.Millisecond); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if got := a.listed(t, "R0"); len(got) != 1 || !strings.Contains(got[0].URI, "nbd.sock") {
			t.Fatalf("config while a create by hand connects: %+v, want the retried entry", got)
		}
	}
	var je *jsonrpc.Error
	if err := <-errc; !errors.As(err, &je) || je.Code != -110 {
		t.Fatalf("create by hand to a silent server = %v, want -110", err)
	}
	if got := a.listed(t, "R0"); len(got) != 1 || !strings.Contains(got[0].URI, "nbd.sock") {
		t.Fatalf("config after the create by hand failed: %+v, want the retried entry", got)
	}
	serveNBD(t, sock)
	waitUntil(t, 5*time.Second, "the retry goes on and creates R0", func() bool { return a.exists("R0") })
}

// TestNBDClientDeleteRetryNameTaken: bdev_nbd_client_delete of a retried
// name that a bdev of another module now holds ends the retry and drops
// the entry (true), leaving that bdev alone.
func TestNBDClientDeleteRetryNameTaken(t *testing.T) {
	a := newRetryAPI(t)
	sock := filepath.Join(t.TempDir(), "nbd.sock")
	if _, err := a.create(AtStartup(t.Context()), clientParams("R0", sock, "")); err != nil {
		t.Fatal(err)
	}
	if _, err := a.mallocCreate(t.Context(), json.RawMessage(`{"name":"R0","num_blocks":64,"block_size":512}`)); err != nil {
		t.Fatal(err)
	}
	res, err := a.nbdClientDelete(t.Context(), json.RawMessage(`{"name":"R0"}`))
	if err != nil || res != true {
		t.Fatalf("delete of a retried name held by a malloc bdev = %v, %v; want true", res, err)
	}
	if got := a.listed(t, "R0"); len(got) != 0 {
		t.Fatalf("config after the delete lists %+v", got)
	}
	if b := a.bases.get("R0"); b == nil || b.module != "malloc" {
		t.Fatalf("the malloc bdev R0 is gone: %+v", b)
	}
	var je *jsonrpc.Error
	if _, err := a.nbdClientDelete(t.Context(), json.RawMessage(`{"name":"R0"}`)); !errors.As(err, &je) || je.Code != -19 {
		t.Fatalf("second delete = %v, want -19", err)
	}
}
