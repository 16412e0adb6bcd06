package scenario

import (
	"fmt"
	"strings"
	"time"
)

// HopServers is the hop scenario's default order: one node, three nodes,
// three nodes, one node (ABBA), each with the same clients.
const HopServers = "koordi,cluster3,cluster3,koordi"

// hopFigures is one row's figures that the hop ratios compare.
type hopFigures struct {
	server        string
	msgs          float64
	p50, p99      time.Duration
	lost, dup     int64
	cpuPerMsg     float64 // server CPU seconds per delivery (a cluster's nodes summed; not nats-server's)
	load, comment string
}

func perMsg(cores, secs float64, delivered int64) float64 {
	if delivered <= 0 {
		return 0
	}
	return cores * secs / float64(delivered)
}

// HopRatios compares every clusterN server of a fanout or latency report
// with the single node (the first server that is not a cluster), each
// judged by the mean over its rows: throughput against goal >= minThroughput
// times the single node's, p99 against <= maxP99 times. It replaces the
// report's ratios and knees (a sweep's knee is not the question here).
func HopRatios(rep *Report, minThroughput, maxP99 float64) {
	var figs []hopFigures
	switch rows := rep.Rows.(type) {
	case []DeliveryRow:
		for _, x := range rows {
			figs = append(figs, hopFigures{server: x.Server, msgs: x.MsgsPerSec, p50: x.Latency.P50, p99: x.Latency.P99,
				lost: x.Accounting.Lost, dup: x.Accounting.Duplicates, load: x.Load,
				cpuPerMsg: perMsg(x.ServerCores, x.DeliverySeconds, x.Accounting.Delivered)})
		}
	case []SweepRow:
		for _, x := range rows {
			figs = append(figs, hopFigures{server: x.Server, msgs: x.Delivered, p50: x.Latency.P50, p99: x.Latency.P99,
				lost: x.Accounting.Lost, dup: x.Accounting.Duplicates, load: x.Load,
				cpuPerMsg: perMsg(x.ServerCores, x.DeliverySeconds, x.Accounting.Delivered)})
		}
	default:
		return
	}
	type agg struct {
		n                   int
		msgs, p50, p99, cpu float64
		lost, dup           int64
	}
	var order []string
	per := map[string]*agg{}
	for _, f := range figs {
		a := per[f.server]
		if a == nil {
			a = &agg{}
			per[f.server] = a
			order = append(order, f.server)
		}
		a.n++
		a.msgs += f.msgs
		a.p50 += float64(f.p50)
		a.p99 += float64(f.p99)
		a.cpu += f.cpuPerMsg
		a.lost += f.lost
		a.dup += f.dup
	}
	base := ""
	for _, s := range order {
		if n, _ := clusterSize(strings.SplitN(strings.SplitN(s, "+", 2)[0], "@", 2)[0]); n == 0 {
			base = s
			break
		}
	}
	rep.Knees, rep.Ratios, rep.Summary = nil, nil, nil
	for _, s := range order {
		a := per[s]
		n := float64(a.n)
		rep.Summary = append(rep.Summary, fmt.Sprintf("%-24s mean of %d: %.0f msgs/s, p50 %s, p99 %s, server CPU %.2f µs/delivery, lost %d, dup %d",
			s, a.n, a.msgs/n, ms(time.Duration(a.p50/n)), ms(time.Duration(a.p99/n)), a.cpu/n*1e6, a.lost, a.dup))
	}
	if base == "" {
		return
	}
	b := per[base]
	for _, s := range order {
		a := per[s]
		if s == base || b.msgs == 0 || b.p99 == 0 {
			continue
		}
		tr := (a.msgs / float64(a.n)) / (b.msgs / float64(b.n))
		p99 := (a.p99 / float64(a.n)) / (b.p99 / float64(b.n))
		p50 := (a.p50 / float64(a.n)) / (b.p50 / float64(b.n))
		rep.Ratios = append(rep.Ratios,
			Ratio{Figure: "delivered msgs/s, mean", Subject: s, Baseline: base, Value: tr, Goal: fmt.Sprintf(">= %.1f", minThroughput), Met: tr >= minThroughput},
			Ratio{Figure: "p99, mean", Subject: s, Baseline: base, Value: p99, Goal: fmt.Sprintf("<= %.0f", maxP99), Met: p99 <= maxP99},
			Ratio{Figure: "p50, mean", Subject: s, Baseline: base, Value: p50},
			Ratio{Figure: "server CPU per delivery, mean", Subject: s, Baseline: base, Value: (a.cpu / float64(a.n)) / (b.cpu / float64(b.n))})
	}
	for _, s := range order {
		if a := per[s]; a.lost > 0 || a.dup > 0 {
			rep.Ratios = append(rep.Ratios, Ratio{Figure: "lost+duplicate deliveries", Subject: s, Baseline: "0", Value: float64(a.lost + a.dup), Goal: "0", Met: false})
		}
	}
}
