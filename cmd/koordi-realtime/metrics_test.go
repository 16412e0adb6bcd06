package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	prommodel "github.com/prometheus/common/model"

	"github.com/koordi/koordi-realtime/gateway/auth"
	"github.com/koordi/koordi-realtime/gateway/inspector"
	"github.com/koordi/koordi-realtime/schema"
	ksql "github.com/koordi/koordi-realtime/sql"
)

// section8 are the series every deployment relies on (the README's metrics
// table and alerts), by the name each has in the exposition (histograms by
// their _count).
var section8 = []string{
	"koordi_gateway_connected_sockets",               // connected sockets by transport
	"koordi_gateway_rooms",                           // rooms
	"koordi_events_derived_total",                    // events derived by type
	"koordi_gateway_messages_sent_total",             // messages sent
	"koordi_gateway_messages_dropped_total",          // messages dropped by reason
	"koordi_gateway_commit_to_send_seconds",          // commit-to-send latency histogram
	"koordi_replication_lag_bytes",                   // replication lag, bytes
	"koordi_replication_lag_seconds",                 // replication lag, seconds
	"koordi_replication_confirmed_lsn",               // confirmed LSN
	"koordi_gateway_auth_failures_total",             // auth failures by reason
	"koordi_gateway_rate_limited_events_total",       // rate-limited events
	"koordi_gateway_slow_consumer_disconnects_total", // slow-consumer disconnects
	"koordi_gateway_replay_hits_total",               // replay hits
	"koordi_gateway_replay_misses_total",             // replay misses
	"go_goroutines",                                  // Go runtime collector
	"process_resident_memory_bytes",                  // process collector
}

// pollingClient speaks just enough Engine.IO v4 long-polling to connect a
// socket with a token, so auth outcomes can be counted without a client
// library.
type pollingClient struct {
	t    *testing.T
	base string
	sid  string
}

func (c *pollingClient) do(method, body string) string {
	c.t.Helper()
	q := url.Values{"EIO": {"4"}, "transport": {"polling"}}
	if c.sid != "" {
		q.Set("sid", c.sid)
	}
	req, _ := http.NewRequest(method, c.base+"/socket.io/?"+q.Encode(), strings.NewReader(body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		c.t.Fatalf("%s: %d %s", method, resp.StatusCode, b)
	}
	return string(b)
}

// connect opens a session and sends CONNECT with auth (a JSON object, or
// "" for none); it returns the server's answer packet.
func (c *pollingClient) connect(authJSON string) string {
	c.t.Helper()
	open := c.do(http.MethodGet, "")
	i := strings.Index(open, `"sid":"`)
	if !strings.HasPrefix(open, "0") || i < 0 {
		c.t.Fatalf("handshake: %q", open)
	}
	c.sid = open[i+7 : i+7+strings.Index(open[i+7:], `"`)]
	c.do(http.MethodPost, "40"+authJSON)
	return c.do(http.MethodGet, "")
}

// TestMetricsExposition runs serve's wiring in-process (newServer, the
// registry cmd owns, /metrics), makes a known sequence of connects and
// writes, and compares the exposition with the expected series and values.
// With --inspector on, the page's stats agree with the exposition.
func TestMetricsExposition(t *testing.T) {
	db := newTestDB(t)
	ctx, conn := context.Background(), db.conn
	if err := ksql.SeedDemo(ctx, conn); err != nil {
		t.Fatal(err)
	}
	db.setup()

	cfg := serveConfig{
		db:         dbConfig{url: db.url, slot: db.slot("metrics"), publication: "koordi_realtime"},
		jwtSecret:  testSecret,
		listenAddr: "127.0.0.1:0", frontendURL: "http://localhost:5173",
		replayWindow: 2 * time.Minute, rateLimit: 100, readyMaxLag: 64 << 20, shutdownGrace: 5 * time.Second,
		inspector: true,
	}
	logger := slog.New(slog.DiscardHandler)
	var registry *prometheus.Registry // the node's own, handed to its pages
	svc, err := cfg.service(logger, func(reg *prometheus.Registry) http.Handler {
		registry = reg
		return inspector.New(inspector.Config{Metrics: reg, Mode: "serve", Logger: logger})
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", cfg.listenAddr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.dropSlot(cfg.db.slot) }) // runs after serve has stopped
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- runService(runCtx, svc, ln) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	base := "http://" + ln.Addr().String()
	waitUntil(t, "/readyz", func() bool {
		code, _, err := fetch(base + "/readyz")
		return err == nil && code == http.StatusOK
	})

	// Connects: one without a token, one with a bad token, one valid (Sam,
	// member of both demo calendars).
	if got := (&pollingClient{t: t, base: base}).connect(""); !strings.Contains(got, "Authentication error: token required") {
		t.Fatalf("no token: %q", got)
	}
	if got := (&pollingClient{t: t, base: base}).connect(`{"token":"not-a-jwt"}`); !strings.Contains(got, "Authentication error: invalid token") {
		t.Fatalf("bad token: %q", got)
	}
	tok, err := auth.Mint([]byte(testSecret), ksql.DemoSam, "sam@demo.koordi.app", time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if got := (&pollingClient{t: t, base: base}).connect(fmt.Sprintf(`{"token":%q}`, tok)); !strings.HasPrefix(got, "40{") {
		t.Fatalf("valid token: %q", got)
	}

	// Writes: three transactions, one event each, all to calendar:School.
	for _, q := range []string{
		`UPDATE events SET assigned_to_user_id = '` + ksql.DemoSam + `' WHERE id = (SELECT id FROM events WHERE event_calendar_id = '` + ksql.DemoSchool + `' AND assigned_to_user_id IS NULL ORDER BY start_time LIMIT 1)`,
		`INSERT INTO events (id, event_calendar_id, ics_uid, title, start_time, end_time) VALUES ('e9000000-0000-4000-8000-000000000001', '` + ksql.DemoSchool + `', 'metrics-1', 'Book fair', now(), now() + interval '1 hour')`,
		`DELETE FROM events WHERE id = 'e9000000-0000-4000-8000-000000000001'`,
	} {
		if tag, err := conn.Exec(ctx, q); err != nil || tag.RowsAffected() != 1 {
			t.Fatalf("%s: %v (%d rows)", q, err, tag.RowsAffected())
		}
	}
	var fams map[string]*dto.MetricFamily
	// Derivation counts an event when its transaction is handed on, which
	// may be after the gateway has sent it: wait for both.
	derived := func(event string) float64 {
		return sample(fams, "koordi_events_derived_total", map[string]string{"event": event})
	}
	// One scrape gathers the collectors one after another, not at one
	// instant: under load the three transactions can be decoded and sent
	// between its reading of the replication counters and of the
	// gateway's, so every counter checked below is waited for.
	waitUntil(t, "three messages sent and derived", func() bool {
		fams = scrape(t, base)
		return sample(fams, "koordi_gateway_messages_sent_total", nil) == 3 &&
			sample(fams, "koordi_replication_transactions_total", nil) >= 3 &&
			sample(fams, "koordi_gateway_commit_to_send_seconds_count", nil) >= 3 &&
			derived(schema.EventCreated) >= 1 && derived(schema.EventDeleted) >= 1 && derived(schema.EventAssigned) >= 1
	})

	for _, name := range section8 {
		if fams[name] == nil {
			t.Errorf("series %s missing from /metrics", name)
		}
	}
	want := map[string]float64{
		`koordi_gateway_connected_sockets{transport="polling"}`:   1,
		`koordi_gateway_connected_sockets{transport="websocket"}`: 0,
		`koordi_gateway_rooms`:                                                3, // user:sam, calendar:School, calendar:Soccer
		`koordi_gateway_messages_sent_total`:                                  3,
		`koordi_gateway_messages_dropped_total{reason="socket_closed"}`:       0,
		`koordi_gateway_messages_dropped_total{reason="duplicate"}`:           0,
		`koordi_gateway_auth_failures_total{reason="token_required"}`:         1,
		`koordi_gateway_auth_failures_total{reason="invalid_token"}`:          1,
		`koordi_gateway_auth_failures_total{reason="token_expired"}`:          0,
		`koordi_gateway_rate_limited_events_total`:                            0,
		`koordi_gateway_slow_consumer_disconnects_total`:                      0,
		`koordi_gateway_replay_hits_total`:                                    0,
		`koordi_gateway_replay_misses_total`:                                  0,
		`koordi_gateway_commit_to_send_seconds_count`:                         3,
		`koordi_replication_transactions_total`:                               3,
		`koordi_events_derived_total{event="` + schema.EventAssigned + `"}`:   1,
		`koordi_events_derived_total{event="` + schema.EventCreated + `"}`:    1,
		`koordi_events_derived_total{event="` + schema.EventDeleted + `"}`:    1,
		`koordi_events_derived_total{event="` + schema.EventUnassigned + `"}`: 0,
		`koordi_events_derived_total{event="other"}`:                          0,
	}
	for key, v := range want {
		name, labels := parseKey(key)
		if got := sample(fams, name, labels); got != v {
			t.Errorf("%s = %v, want %v", key, got, v)
		}
	}
	// Every catalogue event has its series from the start (rate() and
	// absent() work before the first occurrence).
	for _, ev := range schema.Names {
		if sample(fams, "koordi_events_derived_total", map[string]string{"event": ev}) < 0 {
			t.Errorf("koordi_events_derived_total{event=%q} missing", ev)
		}
	}
	// The same through testutil, on the registry itself: the families and
	// the number of series each exposes.
	for name, n := range map[string]int{
		"koordi_gateway_connected_sockets":   2,
		"koordi_gateway_auth_failures_total": 3,
		"koordi_events_derived_total":        len(schema.Names) + 1,
	} {
		if got, err := testutil.GatherAndCount(registry, name); err != nil || got != n {
			t.Errorf("%s: %d series (%v), want %d", name, got, err, n)
		}
	}
	if err := testutil.GatherAndCompare(registry, strings.NewReader(`
# HELP koordi_gateway_slow_consumer_disconnects_total Sockets closed because their outbound queue was full.
# TYPE koordi_gateway_slow_consumer_disconnects_total counter
koordi_gateway_slow_consumer_disconnects_total 0
`), "koordi_gateway_slow_consumer_disconnects_total"); err != nil {
		t.Error(err)
	}
	if problems, err := testutil.GatherAndLint(registry); err != nil {
		t.Error(err)
	} else {
		for _, p := range problems {
			if strings.HasPrefix(p.Metric, "koordi_") {
				t.Errorf("lint: %s: %s", p.Metric, p.Text)
			}
		}
	}
	// serve --inspector: the page, and its live numbers are the same
	// registry's.
	if code, body := httpGet(t, base+"/"); code != http.StatusOK || !strings.Contains(body, "socket.io.min.js") {
		t.Errorf("GET / with --inspector: %d %.100q", code, body)
	}
	var stats inspector.Stats
	code, body := httpGet(t, base+"/inspector/api/stats")
	if err := json.Unmarshal([]byte(body), &stats); code != http.StatusOK || err != nil {
		t.Fatalf("stats: %d %v %s", code, err, body)
	}
	if stats.Sockets["polling"] != 1 || stats.EventsDerived != 3 || stats.MessagesSent != 3 || stats.AuthFailures != 2 || stats.Transactions != 3 {
		t.Errorf("inspector stats disagree with /metrics: %+v", stats)
	}
	if _, body := httpGet(t, base+"/inspector/api/config"); strings.Contains(body, "eyJ") || !strings.Contains(body, `"demo_users":[]`) {
		t.Errorf("serve --inspector offers demo users or tokens: %s", body)
	}
	if lsn := sample(fams, "koordi_replication_confirmed_lsn", nil); lsn <= 0 {
		t.Errorf("koordi_replication_confirmed_lsn = %v, want a position", lsn)
	}
}

func scrape(t *testing.T, base string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := httpClient.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(prommodel.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return fams
}

// parseKey splits `name{a="b",c="d"}`.
func parseKey(key string) (string, map[string]string) {
	name, rest, ok := strings.Cut(key, "{")
	if !ok {
		return name, nil
	}
	labels := map[string]string{}
	for _, kv := range strings.Split(strings.TrimSuffix(rest, "}"), ",") {
		k, v, _ := strings.Cut(kv, "=")
		labels[k] = strings.Trim(v, `"`)
	}
	return name, labels
}

// sample is the value of the series name{labels} (a histogram's _count is
// asked for by that name), or -1 if there is none.
func sample(fams map[string]*dto.MetricFamily, name string, labels map[string]string) float64 {
	fam, count := fams[name], false
	if fam == nil {
		if base, ok := strings.CutSuffix(name, "_count"); ok {
			fam, count = fams[base], true
		}
	}
	if fam == nil {
		return -1
	}
	for _, m := range fam.GetMetric() {
		match := len(m.GetLabel()) == len(labels)
		for _, l := range m.GetLabel() {
			match = match && labels[l.GetName()] == l.GetValue()
		}
		if !match {
			continue
		}
		switch {
		case count && m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Untyped != nil:
			return m.Untyped.GetValue()
		}
	}
	return -1
}
