package inspector

import (
	"context"
	"embed"
	"encoding/json"
	"io/fs"
	"log/slog"
	"math"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

//go:embed static
var static embed.FS

// bundlePath is socket.io-client's browser bundle inside static.
const bundlePath = "static/vendor/socket.io.min.js"

// BundleEmbedded reports whether socket.io-client's browser bundle was
// embedded at build time (see the package documentation).
func BundleEmbedded() bool {
	_, err := fs.Stat(static, bundlePath)
	return err == nil
}

// DemoUser is a user the page offers to connect as, with a ready token.
type DemoUser struct {
	ID    string `json:"id"`
	Name  string `json:"name"`
	Email string `json:"email"`
	Token string `json:"token"`
	// Calendars the user is a member of, which the page shows as the rooms
	// the socket joins on connect.
	Calendars []string `json:"calendars"`
}

// Calendar names a calendar id for display.
type Calendar struct {
	ID    string `json:"id"`
	Name  string `json:"name"`
	Color string `json:"color"`
}

// Config configures the inspector.
type Config struct {
	// Metrics is the registry behind /metrics; the page's live numbers come
	// from it. Nil: the page shows none.
	Metrics prometheus.Gatherer
	// DemoUsers are offered for one-click connect, tokens included. Only
	// `dev` sets them; nil hides the picker.
	DemoUsers []DemoUser
	// Calendars name calendar rooms on the page (demo data). Optional.
	Calendars []Calendar
	// Mode is shown in the header ("dev", "serve"). Optional.
	Mode string
	// Rooms, if set, serves GET /inspector/api/rooms: for the token of the
	// request's Authorization header (Bearer), its user and the rooms a
	// socket with it is in, so the page shows a pasted token's calendars.
	// It must verify the token as the gateway does and answer only for its
	// user; an error is a refused token (401). Nil: 404.
	Rooms func(token string) (user string, rooms []string, err error)
	// Emit, if set, serves POST /inspector/api/emit {"room"}: a test event
	// (EventTest) to one of the token's rooms (checked with Rooms, which
	// must be set too), sent through the database as an application would
	// (koordi_realtime.emit), so it travels the whole path. Only `dev` sets
	// it. Nil: 404.
	Emit func(ctx context.Context, room, event string, data []byte) error
	// Logger receives errors gathering metrics; nil discards.
	Logger *slog.Logger
}

// New returns the inspector's handler. Mount it at "/": it serves the page
// at "/" and its assets and JSON under "/inspector/"; every other path is
// 404, so it never shadows the service's endpoints.
func New(cfg Config) http.Handler {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	sub, _ := fs.Sub(static, "static") // static is a literal embedded directory
	h := &handler{cfg: cfg, files: http.FileServerFS(sub), started: time.Now()}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", h.page)
	mux.HandleFunc("GET /inspector/api/stats", h.stats)
	mux.HandleFunc("GET /inspector/api/config", h.config)
	mux.HandleFunc("GET /inspector/api/rooms", h.rooms)
	mux.HandleFunc("POST /inspector/api/emit", h.emit)
	mux.Handle("GET /inspector/", http.StripPrefix("/inspector", h.assets()))
	return mux
}

type handler struct {
	cfg     Config
	files   http.Handler
	started time.Time
}

func (h *handler) page(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	// The page runs only its own scripts; it shows payloads as text.
	w.Header().Set("Content-Security-Policy", "default-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self' ws: wss:")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	http.ServeFileFS(w, r, static, "static/index.html")
}

func (h *handler) assets() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/vendor/socket.io.min.js" && !BundleEmbedded() {
			// A script that explains itself on the page instead of a 404 in
			// the console.
			w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
			_, _ = w.Write([]byte(`window.KOORDI_BUNDLE_MISSING = "This binary was built without socket.io-client's browser bundle. Run: make run (or make inspector-bundle, then rebuild).";` + "\n"))
			return
		}
		if strings.HasSuffix(r.URL.Path, "/") || strings.HasSuffix(r.URL.Path, ".md") {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("X-Content-Type-Options", "nosniff")
		h.files.ServeHTTP(w, r)
	})
}

// pageConfig is what the page learns about the service at load.
type pageConfig struct {
	Mode      string     `json:"mode"`
	DemoUsers []DemoUser `json:"demo_users"`
	Calendars []Calendar `json:"calendars"`
	Bundle    bool       `json:"bundle"`
	Rooms     bool       `json:"rooms"` // /inspector/api/rooms answers
	Emit      bool       `json:"emit"`  // /inspector/api/emit answers
}

func (h *handler) config(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, pageConfig{
		Mode:      h.cfg.Mode,
		DemoUsers: nonNil(h.cfg.DemoUsers),
		Calendars: nonNil(h.cfg.Calendars),
		Bundle:    BundleEmbedded(),
		Rooms:     h.cfg.Rooms != nil,
		Emit:      h.cfg.Emit != nil && h.cfg.Rooms != nil,
	})
}

// Stats is the summary the page polls, from the service's metrics. Counters
// are totals since start; the page derives rates from successive polls.
type Stats struct {
	Time          time.Time          `json:"time"`
	UptimeSeconds float64            `json:"uptime_seconds"`
	Sockets       map[string]float64 `json:"sockets"` // by transport
	Rooms         float64            `json:"rooms"`
	EventsDerived float64            `json:"events_derived_total"`
	EventsByType  map[string]float64 `json:"events_by_type"`
	MessagesSent  float64            `json:"messages_sent_total"`
	Dropped       float64            `json:"messages_dropped_total"`
	Transactions  float64            `json:"transactions_total"`
	LagBytes      float64            `json:"lag_bytes"`
	LagSeconds    float64            `json:"lag_seconds"`
	ConfirmedLSN  float64            `json:"confirmed_lsn"`
	AuthFailures  float64            `json:"auth_failures_total"`
	SlowConsumers float64            `json:"slow_consumer_disconnects_total"`
	ReplayEvents  float64            `json:"replay_window_events"`
	// The commit-to-send histogram's sum (seconds) and count; the page
	// derives the recent mean from successive polls.
	CommitToSendSum   float64 `json:"commit_to_send_seconds_sum"`
	CommitToSendCount float64 `json:"commit_to_send_count"`
	Goroutines        float64 `json:"goroutines"`
	ResidentBytes     float64 `json:"resident_bytes"`
	// With several nodes: this node's name, whether it streams from the
	// slot (else it serves sockets from the feed) and the feed's lag.
	// Absent on a single node.
	Node           string  `json:"node,omitempty"`
	Leader         *bool   `json:"leader,omitempty"`
	FeedLagSeconds float64 `json:"feed_lag_seconds,omitempty"`
}

func (h *handler) stats(w http.ResponseWriter, _ *http.Request) {
	if h.cfg.Metrics == nil {
		http.Error(w, "no metrics configured", http.StatusNotFound)
		return
	}
	families, err := h.cfg.Metrics.Gather()
	if err != nil {
		// Gather returns what it could; a partial summary is still useful.
		h.cfg.Logger.Warn("inspector: gather metrics", "err", err)
	}
	writeJSON(w, summarize(families, time.Now(), h.started))
}

// summarize reads the series the page shows; absent series read as zero.
func summarize(families []*dto.MetricFamily, now, started time.Time) Stats {
	s := Stats{
		Time:          now.UTC(),
		UptimeSeconds: math.Round(now.Sub(started).Seconds()),
		Sockets:       map[string]float64{},
		EventsByType:  map[string]float64{},
	}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			v := value(m)
			switch f.GetName() {
			case "koordi_gateway_connected_sockets":
				s.Sockets[label(m, "transport")] += v
			case "koordi_gateway_rooms":
				s.Rooms = v
			case "koordi_events_derived_total":
				s.EventsDerived += v
				if v > 0 {
					s.EventsByType[label(m, "event")] = v
				}
			case "koordi_gateway_messages_sent_total":
				s.MessagesSent = v
			case "koordi_gateway_messages_dropped_total":
				s.Dropped += v
			case "koordi_replication_transactions_total":
				s.Transactions = v
			case "koordi_replication_lag_bytes":
				s.LagBytes = v
			case "koordi_replication_lag_seconds":
				s.LagSeconds = v
			case "koordi_replication_confirmed_lsn":
				s.ConfirmedLSN = v
			case "koordi_gateway_auth_failures_total":
				s.AuthFailures += v
			case "koordi_gateway_slow_consumer_disconnects_total":
				s.SlowConsumers = v
			case "koordi_gateway_replay_window_events":
				s.ReplayEvents = v
			case "koordi_gateway_commit_to_send_seconds":
				s.CommitToSendSum = m.GetHistogram().GetSampleSum()
				s.CommitToSendCount = float64(m.GetHistogram().GetSampleCount())
			case "koordi_cluster_node_info":
				s.Node = label(m, "node")
			case "koordi_cluster_leader":
				leader := v == 1
				s.Leader = &leader
			case "koordi_feed_lag_seconds":
				s.FeedLagSeconds = v
			case "go_goroutines":
				s.Goroutines = v
			case "process_resident_memory_bytes":
				s.ResidentBytes = v
			}
		}
	}
	return s
}

func value(m *dto.Metric) float64 {
	switch {
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Untyped != nil:
		return m.Untyped.GetValue()
	}
	return 0
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(v)
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
