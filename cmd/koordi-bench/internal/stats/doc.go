// Package stats records latencies in a fixed-size log-linear histogram
// (relative error under 1/128, about 0.8%) that many goroutines update with
// atomic adds, and summarises them as percentiles. Memory is constant
// whatever the number of samples, so a run with millions of deliveries does
// not grow the load generator.
package stats
