package cdc

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	lagBytes     prometheus.Gauge
	lagSeconds   prometheus.Gauge
	confirmedLSN prometheus.Gauge
	receivedLSN  prometheus.Gauge
	transactions prometheus.Counter
	skipped      prometheus.Counter
	reconnects   prometheus.Counter
	// tableProblems is 1 for each watched table and what is wrong with it
	// (missing, replica_identity, not_published), 0 once mended.
	tableProblems *prometheus.GaugeVec
}

// newMetrics registers the consumer's metrics on reg; nil registers none
// (the metrics still work, nobody collects them). Collectors already on reg —
// a consumer of an earlier leadership term, in the same process — are shared
// rather than a panic.
func newMetrics(reg prometheus.Registerer) *metrics {
	f := factory{reg}
	return &metrics{
		lagBytes: f.gauge(prometheus.GaugeOpts{
			Name: "koordi_replication_lag_bytes",
			Help: "WAL bytes between the server's current position and the newest position handed off to fan-out.",
		}),
		lagSeconds: f.gauge(prometheus.GaugeOpts{
			Name: "koordi_replication_lag_seconds",
			Help: "Seconds between the commit of the newest handed-off transaction and its hand-off; 0 when caught up.",
		}),
		confirmedLSN: f.gauge(prometheus.GaugeOpts{
			Name: "koordi_replication_confirmed_lsn",
			Help: "The flush position last confirmed to PostgreSQL (the slot's confirmed_flush_lsn).",
		}),
		receivedLSN: f.gauge(prometheus.GaugeOpts{
			Name: "koordi_replication_received_lsn",
			Help: "The newest WAL position received from PostgreSQL.",
		}),
		transactions: f.counter(prometheus.CounterOpts{
			Name: "koordi_replication_transactions_total",
			Help: "Committed transactions decoded from the replication stream.",
		}),
		skipped: f.counter(prometheus.CounterOpts{
			Name: "koordi_replication_skipped_changes_total",
			Help: "Changes ignored by the decoder: tables that are not watched, TRUNCATE, logical decoding messages (never events; gap records that do not verify).",
		}),
		reconnects: f.counter(prometheus.CounterOpts{
			Name: "koordi_replication_reconnects_total",
			Help: "Replication connections lost and re-established.",
		}),
		tableProblems: f.gaugeVec(prometheus.GaugeOpts{
			Name: "koordi_replication_table_problems",
			Help: "1 while a watched table cannot be streamed fully, by table and problem (missing, replica_identity, not_published); 0 once mended.",
		}, []string{"table", "problem"}),
	}
}

type factory struct{ reg prometheus.Registerer }

func (f factory) gauge(o prometheus.GaugeOpts) prometheus.Gauge {
	return register(f.reg, prometheus.NewGauge(o))
}

func (f factory) counter(o prometheus.CounterOpts) prometheus.Counter {
	return register(f.reg, prometheus.NewCounter(o))
}

func (f factory) gaugeVec(o prometheus.GaugeOpts, labels []string) *prometheus.GaugeVec {
	return register(f.reg, prometheus.NewGaugeVec(o, labels))
}

func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if reg == nil {
		return c
	}
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
		panic(err) // a conflicting definition is a programming error
	}
	return c
}
