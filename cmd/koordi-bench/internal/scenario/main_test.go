package scenario

import (
	"testing"

	"github.com/koordi/koordi-realtime/sql/pgcluster"
)

var pg *pgcluster.Cluster

// TestMain starts one PostgreSQL cluster for the tests of what the
// scenarios do to a database (slots and their readers).
func TestMain(m *testing.M) {
	pgcluster.TestMain(m, &pg)
}
