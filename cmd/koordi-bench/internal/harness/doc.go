// Package harness gives the benchmark scenarios what they measure against:
// a throwaway PostgreSQL cluster with Koordi's schema, seeded users,
// calendars, memberships and events with deterministic ids; the servers
// under test as child processes (koordi-realtime serve, the Node reference
// of testdata/bench, or the bench's own in-process build with pprof); and
// process accounting read from /proc (RSS, CPU time).
//
// Every server listens on 127.0.0.1. A Process is owned by its caller, who
// must Stop it; Stop signals only that child's process group.
package harness
