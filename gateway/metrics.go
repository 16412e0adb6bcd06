package gateway

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the gateway's Prometheus series (the README lists them). With a
// nil Registerer they are created but never exported.
type metrics struct {
	messagesSent    prometheus.Counter
	dropped         *prometheus.CounterVec
	droppedClosed   prometheus.Counter
	droppedDup      prometheus.Counter
	authFailures    *prometheus.CounterVec
	rateLimited     prometheus.Counter
	slowDisconnects prometheus.Counter
	replayHits      prometheus.Counter
	replayMisses    prometheus.Counter
	replayed        prometheus.Counter
	fellBehind      prometheus.Counter
	latency         prometheus.Histogram
}

// Reasons a message is dropped.
const (
	dropSocketClosed = "socket_closed" // the socket's queue was full (slow consumer) or it was closing
	dropDuplicate    = "duplicate"     // an offset already published (stream re-sent it)
)

func newMetrics(reg prometheus.Registerer, g *Gateway) *metrics {
	m := &metrics{
		messagesSent: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "koordi_gateway_messages_sent_total",
			Help: "Event messages queued to sockets (one per recipient), replays included.",
		}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "koordi_gateway_messages_dropped_total",
			Help: "Event messages not delivered, by reason: socket_closed (the socket was closing; it recovers by replay), duplicate (offset already published).",
		}, []string{"reason"}),
		authFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "koordi_gateway_auth_failures_total",
			Help: "Refused CONNECTs by reason: token_required, invalid_token, token_expired.",
		}, []string{"reason"}),
		rateLimited: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "koordi_gateway_rate_limited_events_total",
			Help: "Client events and Socket.IO CONNECTs refused by the rate limit (per connection, per user).",
		}),
		slowDisconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "koordi_gateway_slow_consumer_disconnects_total",
			Help: "Sockets closed because their outbound queue was full.",
		}),
		replayHits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "koordi_gateway_replay_hits_total",
			Help: "Reconnects with a pid that were recovered (recovered: true).",
		}),
		replayMisses: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "koordi_gateway_replay_misses_total",
			Help: "Reconnects with a pid that could not be recovered and connected fresh.",
		}),
		replayed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "koordi_gateway_replayed_messages_total",
			Help: "Event messages sent from the replay window to sockets catching up (recovering, or slower than the stream).",
		}),
		fellBehind: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "koordi_gateway_catch_up_resets_total",
			Help: "Sockets that fell out of the replay window while catching up and were sent sync:reset.",
		}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "koordi_gateway_commit_to_send_seconds",
			Help:    "Time from a transaction's commit in PostgreSQL to its events being queued to every member socket.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}),
	}
	m.droppedClosed = m.dropped.WithLabelValues(dropSocketClosed)
	m.droppedDup = m.dropped.WithLabelValues(dropDuplicate)
	for _, r := range []string{"token_required", "invalid_token", "token_expired"} {
		m.authFailures.WithLabelValues(r)
	}
	if reg == nil {
		return m
	}
	reg.MustRegister(m.messagesSent, m.dropped, m.authFailures, m.rateLimited, m.slowDisconnects,
		m.replayHits, m.replayMisses, m.replayed, m.fellBehind, m.latency, &stateCollector{g: g})
	return m
}

// stateCollector reports gauges computed at scrape time from the gateway's
// state, so the hot path keeps no extra counters.
type stateCollector struct{ g *Gateway }

var (
	descSockets = prometheus.NewDesc("koordi_gateway_connected_sockets",
		"Connected sockets by current transport.", []string{"transport"}, nil)
	descRooms = prometheus.NewDesc("koordi_gateway_rooms",
		"Rooms with at least one member socket.", nil, nil)
	descReplayEvents = prometheus.NewDesc("koordi_gateway_replay_window_events",
		"Events retained in the replay window.", nil, nil)
	descReplayBytes = prometheus.NewDesc("koordi_gateway_replay_window_bytes",
		"Approximate memory of the replay window.", nil, nil)
	descCatchingUp = prometheus.NewDesc("koordi_gateway_catching_up_sockets",
		"Sockets catching up from the replay window at their own pace (recovering, or slower than the stream).", nil, nil)
)

func (s *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descSockets
	ch <- descRooms
	ch <- descReplayEvents
	ch <- descReplayBytes
	ch <- descCatchingUp
}

func (s *stateCollector) Collect(ch chan<- prometheus.Metric) {
	byTransport := map[string]int{"polling": 0, "websocket": 0}
	x := s.g.idx
	x.mu.RLock()
	for _, u := range x.users {
		for _, c := range u {
			if c.live {
				byTransport[c.conn.Transport()]++
			}
		}
	}
	rooms, lagging := len(x.rooms), x.lagging
	x.mu.RUnlock()
	ch <- prometheus.MustNewConstMetric(descCatchingUp, prometheus.GaugeValue, float64(lagging))
	for t, n := range byTransport {
		ch <- prometheus.MustNewConstMetric(descSockets, prometheus.GaugeValue, float64(n), t)
	}
	ch <- prometheus.MustNewConstMetric(descRooms, prometheus.GaugeValue, float64(rooms))
	events, bytes := s.g.window.stats()
	ch <- prometheus.MustNewConstMetric(descReplayEvents, prometheus.GaugeValue, float64(events))
	ch <- prometheus.MustNewConstMetric(descReplayBytes, prometheus.GaugeValue, float64(bytes))
}
