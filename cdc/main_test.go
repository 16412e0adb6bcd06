package cdc

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/koordi/koordi-realtime/sql/pgcluster"
)

var cluster *pgcluster.Cluster

// TestMain starts one PostgreSQL cluster for the package (each test gets its
// own database) and fails the run if a test leaves goroutines behind.
func TestMain(m *testing.M) {
	pgcluster.TestMain(m, &cluster, func() error { return goleak.Find() })
}
