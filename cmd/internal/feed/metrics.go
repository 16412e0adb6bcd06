package feed

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the feed's series: koordi_feed_published_messages_total,
// koordi_feed_received_messages_total, koordi_feed_rejected_messages_total,
// koordi_feed_publish_ack_seconds, koordi_feed_lag_seconds.
type Metrics struct {
	published  prometheus.Counter
	received   prometheus.Counter
	rejected   prometheus.Counter
	ackLatency prometheus.Histogram
	lag        prometheus.Gauge
}

// NewMetrics registers the feed's metrics on reg; nil registers none.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		published: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "koordi_feed_published_messages_total",
			Help: "Messages this node published to the feed (as the leader).",
		}),
		received: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "koordi_feed_received_messages_total",
			Help: "Messages this node received from the feed.",
		}),
		rejected: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "koordi_feed_rejected_messages_total",
			Help: "Feed messages this node could not decode (logged and skipped).",
		}),
		ackLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "koordi_feed_publish_ack_seconds",
			Help:    "Time from publishing a message to the feed to JetStream's acknowledgement.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}),
		lag: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "koordi_feed_lag_seconds",
			Help: "Seconds between the commit of the newest transaction received from the feed and its receipt; 0 when caught up.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.published, m.received, m.rejected, m.ackLatency, m.lag)
	}
	return m
}
