package main

import (
	"testing"

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
