// Package inproc runs koordi-realtime's CDC consumer and gateway in one
// process with net/http/pprof, for profiling the server under a benchmark
// (`koordi-realtime serve` has no pprof endpoint). It is serve's wiring
// minus what the benchmarks never exercise: memberships do not change
// during a run, so transactions go straight to Gateway.Publish without
// serve's room moves at member:added/removed.
//
// Run owns every goroutine it starts (errgroup) and returns after all
// ended, when ctx ends or a part fails.
package inproc
