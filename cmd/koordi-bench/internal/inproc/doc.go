// Package inproc runs koordi-realtime's node — the same assembly as
// `koordi-realtime serve` (package cmd/internal/service), with serve's
// defaults — in the benchmark's process with net/http/pprof on a separate
// address, for profiling the server under a benchmark (serve itself has no
// pprof endpoint).
//
// Run owns every goroutine it starts (errgroup) and returns after all
// ended, when ctx ends or a part fails.
package inproc
