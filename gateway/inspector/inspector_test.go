package inspector

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func get(t *testing.T, h http.Handler, path string) (int, string, http.Header) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	body, _ := io.ReadAll(rec.Result().Body)
	return rec.Code, string(body), rec.Result().Header
}

func TestRoutes(t *testing.T) {
	h := New(Config{})
	for _, tc := range []struct {
		path string
		code int
		has  string
	}{
		{"/", 200, `<script src="/inspector/vendor/socket.io.min.js">`},
		{"/inspector/app.js", 200, "socket.onAny"},
		{"/inspector/app.css", 200, "--c-assigned"},
		{"/inspector/vendor/socket.io.min.js", 200, ""},
		{"/inspector/vendor/README.md", 404, ""},
		{"/inspector/", 404, ""},
		{"/inspector/index.html", 301, ""}, // FileServer's canonical redirect to ./, which is 404
		{"/metrics", 404, ""},              // never shadows the service's endpoints
		{"/socket.io/", 404, ""},
		{"/inspector/api/stats", 404, "no metrics"},
	} {
		code, body, _ := get(t, h, tc.path)
		if code != tc.code || !strings.Contains(body, tc.has) {
			t.Errorf("GET %s: %d %.80q, want %d containing %q", tc.path, code, body, tc.code, tc.has)
		}
	}
	_, _, hdr := get(t, h, "/")
	if csp := hdr.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") {
		t.Errorf("page CSP = %q", csp)
	}
}

func TestBundleMissingExplains(t *testing.T) {
	_, body, hdr := get(t, New(Config{}), "/inspector/vendor/socket.io.min.js")
	if BundleEmbedded() {
		if len(body) < 10_000 {
			t.Errorf("embedded bundle is %d bytes", len(body))
		}
		return
	}
	if !strings.Contains(body, "KOORDI_BUNDLE_MISSING") || !strings.Contains(hdr.Get("Content-Type"), "javascript") {
		t.Errorf("missing bundle answered %q (%s)", body, hdr.Get("Content-Type"))
	}
}

func TestConfigExposesDemoUsersOnlyWhenGiven(t *testing.T) {
	var got pageConfig
	_, body, _ := get(t, New(Config{Mode: "serve"}), "/inspector/api/config")
	if err := json.Unmarshal([]byte(body), &got); err != nil {
		t.Fatal(err)
	}
	if got.Mode != "serve" || len(got.DemoUsers) != 0 || got.DemoUsers == nil {
		t.Errorf("serve config = %s", body)
	}
	_, body, _ = get(t, New(Config{DemoUsers: []DemoUser{{ID: "u", Name: "Alex", Token: "tok", Calendars: []string{"c"}}}}), "/inspector/api/config")
	if err := json.Unmarshal([]byte(body), &got); err != nil {
		t.Fatal(err)
	}
	if len(got.DemoUsers) != 1 || got.DemoUsers[0].Token != "tok" {
		t.Errorf("dev config = %s", body)
	}
}

// TestStats reads the service's series from a registry shaped as serve's.
func TestStats(t *testing.T) {
	reg := prometheus.NewRegistry()
	sockets := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "koordi_gateway_connected_sockets"}, []string{"transport"})
	derived := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "koordi_events_derived_total"}, []string{"event"})
	lag := prometheus.NewGauge(prometheus.GaugeOpts{Name: "koordi_replication_lag_bytes"})
	latency := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "koordi_gateway_commit_to_send_seconds"})
	dropped := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "koordi_gateway_messages_dropped_total"}, []string{"reason"})
	reg.MustRegister(sockets, derived, lag, latency, dropped)
	sockets.WithLabelValues("websocket").Set(3)
	sockets.WithLabelValues("polling").Set(1)
	derived.WithLabelValues("event:assigned").Add(5)
	derived.WithLabelValues("event:created").Add(2)
	derived.WithLabelValues("member:added")
	lag.Set(4096)
	latency.Observe(0.002)
	latency.Observe(0.004)
	dropped.WithLabelValues("duplicate").Add(1)
	dropped.WithLabelValues("socket_closed").Add(2)

	code, body, _ := get(t, New(Config{Metrics: reg}), "/inspector/api/stats")
	if code != 200 {
		t.Fatalf("stats: %d %s", code, body)
	}
	var s Stats
	if err := json.Unmarshal([]byte(body), &s); err != nil {
		t.Fatal(err)
	}
	if s.Sockets["websocket"] != 3 || s.Sockets["polling"] != 1 || s.EventsDerived != 7 || s.LagBytes != 4096 || s.Dropped != 3 {
		t.Errorf("stats = %+v", s)
	}
	if len(s.EventsByType) != 2 || s.EventsByType["event:assigned"] != 5 {
		t.Errorf("events by type = %v (zero series left out)", s.EventsByType)
	}
	if s.CommitToSendCount != 2 || s.CommitToSendSum < 0.0059 || s.CommitToSendSum > 0.0061 {
		t.Errorf("commit to send: sum %v count %v, want 0.006 and 2", s.CommitToSendSum, s.CommitToSendCount)
	}
}

// TestStatsCluster: with several nodes the page learns this node's name and
// whether it leads; on a single node neither is sent, so the page shows no
// node at all.
func TestStatsCluster(t *testing.T) {
	stats := func(reg *prometheus.Registry) (Stats, string) {
		t.Helper()
		code, body, _ := get(t, New(Config{Metrics: reg}), "/inspector/api/stats")
		if code != 200 {
			t.Fatalf("stats: %d %s", code, body)
		}
		var s Stats
		if err := json.Unmarshal([]byte(body), &s); err != nil {
			t.Fatal(err)
		}
		return s, body
	}
	if s, body := stats(prometheus.NewRegistry()); s.Leader != nil || s.Node != "" || strings.Contains(body, `"leader"`) {
		t.Errorf("single node: stats carry cluster fields: %s", body)
	}

	reg := prometheus.NewRegistry()
	leader := prometheus.NewGauge(prometheus.GaugeOpts{Name: "koordi_cluster_leader"})
	info := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "koordi_cluster_node_info"}, []string{"node"})
	feedLag := prometheus.NewGauge(prometheus.GaugeOpts{Name: "koordi_feed_lag_seconds"})
	reg.MustRegister(leader, info, feedLag)
	info.WithLabelValues("node2").Set(1)
	feedLag.Set(0.25)
	if s, body := stats(reg); s.Leader == nil || *s.Leader || s.Node != "node2" || s.FeedLagSeconds != 0.25 {
		t.Errorf("standby: %s", body)
	}
	leader.Set(1)
	if s, body := stats(reg); s.Leader == nil || !*s.Leader {
		t.Errorf("leader: %s", body)
	}
}
