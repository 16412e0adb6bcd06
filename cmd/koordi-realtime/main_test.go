package main

import (
	"context"
	"fmt"
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/koordi/koordi-realtime/sql/pgcluster"
)

// cluster is the package's PostgreSQL; each test creates its own database
// with pgcluster.NewDatabase(t, cluster).
var cluster *pgcluster.Cluster

// TestMain starts one cluster for the package and fails the run if a test
// leaves goroutines behind.
func TestMain(m *testing.M) {
	c, err := pgcluster.Start(context.Background(), pgcluster.Config{})
	if err != nil {
		if os.Getenv("CI") != "" {
			fmt.Fprintf(os.Stderr, "pgcluster: %v\n", err)
			os.Exit(1)
		}
		fmt.Fprintf(os.Stderr, "pgcluster: %v (PostgreSQL tests skip)\n", err)
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
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}
