package madsidecar

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// The end-to-end tests share one harness (tests/sdk_harness.py: a real Redis and a real
// sidecar), started by the first test that needs it and stopped by TestMain.

type harnessProc struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	out    *bufio.Reader
	stderr *bytes.Buffer
	Socket string `json:"socket"`
	Rules  []any  `json:"rules"`
	mu     sync.Mutex
}

var (
	harnessOnce sync.Once
	harnessInst *harnessProc
	harnessErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if harnessInst != nil {
		harnessInst.shutdown()
	}
	os.Exit(code)
}

func repoRoot() (string, error) {
	return filepath.Abs("../..")
}

func startHarness() (*harnessProc, error) {
	root, err := repoRoot()
	if err != nil {
		return nil, err
	}
	python := os.Getenv("MADSIDECAR_PYTHON")
	if python == "" {
		python = filepath.Join(root, ".venv", "bin", "python")
	}
	if _, err := os.Stat(python); err != nil {
		return nil, fmt.Errorf("no Python for the test harness at %s (%v): run ./dev test from the repository root once to create the venv, or set MADSIDECAR_PYTHON", python, err)
	}
	h := &harnessProc{stderr: &bytes.Buffer{}}
	h.cmd = exec.Command(python, "-m", "tests.sdk_harness")
	h.cmd.Dir = root
	h.cmd.Stderr = &lockedWriter{w: h.stderr}
	if h.stdin, err = h.cmd.StdinPipe(); err != nil {
		return nil, err
	}
	stdout, err := h.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := h.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting the harness: %w", err)
	}
	h.out = bufio.NewReader(stdout)
	type lineResult struct {
		line string
		err  error
	}
	ch := make(chan lineResult, 1)
	go func() {
		line, err := h.out.ReadString('\n')
		ch <- lineResult{line, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			h.shutdown()
			return nil, fmt.Errorf("the harness did not start: %v\n%s", r.err, h.stderrText())
		}
		if err := json.Unmarshal([]byte(r.line), h); err != nil || h.Socket == "" {
			h.shutdown()
			return nil, fmt.Errorf("unexpected harness line %q: %v", r.line, err)
		}
	case <-time.After(60 * time.Second):
		h.shutdown()
		return nil, fmt.Errorf("the harness was not ready within 60 s\n%s", h.stderrText())
	}
	return h, nil
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func (h *harnessProc) stderrText() string {
	if lw, ok := h.cmd.Stderr.(*lockedWriter); ok {
		lw.mu.Lock()
		defer lw.mu.Unlock()
	}
	s := h.stderr.String()
	if len(s) > 4000 {
		s = s[len(s)-4000:]
	}
	return s
}

func (h *harnessProc) shutdown() {
	_ = h.stdin.Close()
	done := make(chan struct{})
	go func() { _ = h.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		_ = h.cmd.Process.Kill()
		<-done
	}
}

// command sends one harness command (flush, restart, stop, start) and waits for "ok".
func (h *harnessProc) command(t *testing.T, cmd string) {
	t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, err := fmt.Fprintln(h.stdin, cmd); err != nil {
		t.Fatalf("harness %s: %v", cmd, err)
	}
	ch := make(chan string, 1)
	go func() {
		line, _ := h.out.ReadString('\n')
		ch <- strings.TrimSpace(line)
	}()
	select {
	case line := <-ch:
		if line != "ok" {
			t.Fatalf("harness %s: %q\n%s", cmd, line, h.stderrText())
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("harness %s: no answer within 60 s", cmd)
	}
}

func harness(t *testing.T) *harnessProc {
	t.Helper()
	harnessOnce.Do(func() { harnessInst, harnessErr = startHarness() })
	if harnessErr != nil {
		t.Fatal(harnessErr)
	}
	return harnessInst
}

// connect returns a client of the harness's sidecar, closed when the test ends.
func connect(t *testing.T, opts *Options) *Client {
	t.Helper()
	h := harness(t)
	o := Options{}
	if opts != nil {
		o = *opts
	}
	if o.SocketPath == "" {
		o.SocketPath = h.Socket
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := Connect(ctx, &o)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// ctxT is a context for one step of a test: generous, only to catch hangs.
func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// unique makes names that no other test (or earlier run) uses.
func unique(t *testing.T, what string) string {
	return fmt.Sprintf("go-%s-%s-%d", strings.ReplaceAll(t.Name(), "/", "-"), what, time.Now().UnixNano())
}

// waitNote waits for a notification called name that satisfies ok.
func waitNote(t *testing.T, c *Client, name string, ok func(Notification) bool) Notification {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		select {
		case n, open := <-c.Notifications():
			if !open {
				t.Fatalf("notifications closed while waiting for %s", name)
			}
			if n.Name == name && (ok == nil || ok(n)) {
				return n
			}
		case <-deadline:
			t.Fatalf("no %s notification within 20 s", name)
		}
	}
}

// must(f())(t): f's value, or the test fails with its error.
func must[T any](v T, err error) func(*testing.T) T {
	return func(t *testing.T) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

// waitFor polls a condition of the sidecar that no event announces (a call having
// reached the sidecar's wait queue, as its stats show), up to a generous bound.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}
