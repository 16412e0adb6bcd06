package cdc

import (
	"context"
	"flag"
	"fmt"
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/koordi/koordi-realtime/sql/pgcluster"
)

var cluster *pgcluster.Cluster

// TestMain starts one PostgreSQL cluster for the package (each test gets its
// own database) and fails the run if a test leaves goroutines behind.
func TestMain(m *testing.M) {
	flag.Parse()
	if f := flag.Lookup("test.fuzzworker"); f != nil && f.Value.String() == "true" {
		// Fuzz workers run FuzzDecode only, which needs no database.
		os.Exit(m.Run())
	}
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
