// Package scenario holds koordi-bench's scenarios — cdc (backlog catch-up
// against pg_recvlogical), fanout (deliveries per second), latency
// (write-to-receive at a fixed commit rate) and idle (memory per
// connection) — and their reports: a printed table and a JSON file.
//
// Every scenario runs each server under test in turn against the same
// database, the same clients and the same writes, in the same command, so
// figures are reported as ratios to the baseline measured alongside them.
// Loads are bounded in count and time; everything listens on 127.0.0.1.
package scenario
