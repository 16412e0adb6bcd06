package gateway

import (
	"context"
	"fmt"
	"os"
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
	c, err := pgcluster.Start(context.Background(), pgcluster.Config{})
	if err != nil {
		if os.Getenv("CI") != "" {
			fmt.Fprintf(os.Stderr, "pgcluster: %v\n", err)
			os.Exit(1)
		}
		fmt.Fprintf(os.Stderr, "pgcluster: %v (database tests skip)\n", err)
	}
	cluster = c
	code := m.Run()
	if c != nil {
		if err := c.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "pgcluster: %v\n", err)
		}
	}
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goroutines leaked: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}
