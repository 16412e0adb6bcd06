package main

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/koordi/koordi-realtime/sql/pgcluster"
)

// cluster is the package's PostgreSQL; each test creates its own database
// with pgcluster.NewDatabase(t, cluster).
var cluster *pgcluster.Cluster

// TestMain starts one cluster for the package, removes the binary the
// process tests built, and fails the run if a test leaves goroutines behind.
func TestMain(m *testing.M) {
	pgcluster.TestMain(m, &cluster, removeBinary, func() error { return goleak.Find() })
}

// unavailable ends a test that lacks a tool from outside Go (Node, an npm
// package, chromium): skipped on a developer's machine, failed under CI,
// where a silent skip would pass a run that tested nothing.
func unavailable(t *testing.T, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// syncBuffer is a bytes.Buffer safe for one writer and polling readers: a
// process's output is read while the process still writes it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// envOf is the environment of an in-process run: exactly vars, nothing of
// the test process's own environment.
func envOf(vars map[string]string, stdout, stderr *syncBuffer) *environment {
	return &environment{stdout: stdout, stderr: stderr, getenv: func(k string) string { return vars[k] }}
}

// waitUntil polls cond; for conditions nothing signals, such as a line in a
// log.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// lastLines keeps failure reports readable: the end of a log is where a
// process says why it stopped.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
