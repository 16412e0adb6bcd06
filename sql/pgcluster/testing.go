package pgcluster

import (
	"context"
	"fmt"
	"os"
	"sync/atomic"
	"testing"
)

// TestMain runs a test package's tests against one shared throwaway cluster:
//
//	var cluster *pgcluster.Cluster
//	func TestMain(m *testing.M) { pgcluster.TestMain(m, &cluster) }
//
// When no PostgreSQL binaries are found the tests run with *cluster nil and
// tests call [Require], which skips them — except under CI (CI set), where a
// missing service is a failure, never a skip.
func TestMain(m *testing.M, cluster **Cluster) {
	c, err := Start(context.Background(), Config{})
	if err != nil {
		if os.Getenv("CI") != "" {
			fmt.Fprintf(os.Stderr, "pgcluster: %v\n", err)
			os.Exit(1)
		}
		startErr = err
	}
	*cluster = c
	code := m.Run()
	if c != nil {
		if err := c.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "pgcluster: %v\n", err)
		}
	}
	os.Exit(code)
}

var (
	startErr error
	dbSeq    atomic.Int64
)

// Require returns the shared cluster or skips the test when none could be
// started outside CI.
func Require(t testing.TB, c *Cluster) *Cluster {
	t.Helper()
	if c == nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("no PostgreSQL cluster: %v", startErr)
		}
		t.Skipf("no PostgreSQL cluster: %v", startErr)
	}
	return c
}

// NewDatabase creates a fresh database for one test and returns its URL.
// Replication slots belong to a database, so tests that each use their own
// database never see each other's changes.
func NewDatabase(t testing.TB, c *Cluster) string {
	t.Helper()
	c = Require(t, c)
	name := fmt.Sprintf("t%d_%d", os.Getpid(), dbSeq.Add(1))
	url, err := c.CreateDatabase(context.Background(), name)
	if err != nil {
		t.Fatalf("create test database: %v", err)
	}
	return url
}
