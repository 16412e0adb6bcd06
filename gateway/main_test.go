package gateway

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/koordi/koordi-realtime/sql/pgcluster"
)

// cluster is the package's throwaway PostgreSQL, for PGMemberships; nil when
// none could be started (then those tests skip, or fail under CI).
var cluster *pgcluster.Cluster

// TestMain starts the cluster and, after every test, checks that no
// goroutine outlived its sockets.
func TestMain(m *testing.M) {
	pgcluster.TestMain(m, &cluster, func() error { return goleak.Find() })
}
