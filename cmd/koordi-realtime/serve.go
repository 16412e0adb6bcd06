package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"

	"github.com/koordi/koordi-realtime/cdc"
	"github.com/koordi/koordi-realtime/gateway"
	"github.com/koordi/koordi-realtime/gateway/inspector"
)

// serveConfig is everything `serve` reads from flags and environment.
type serveConfig struct {
	db            dbConfig
	jwtSecret     string
	jwtPublicKey  string
	listenAddr    string
	frontendURL   string
	replayWindow  time.Duration
	natsURL       string
	rateLimit     int
	readyMaxLag   int
	shutdownGrace time.Duration
	inspector     bool
}

func (c *serveConfig) bind(f *flags) {
	c.bindWith(f, ":3000")
	f.Bool(&c.inspector, "inspector", "INSPECTOR", false, "serve the inspector page at / (a browser view of sockets, events and lag)")
}

// bindWith binds every serve setting; dev shares them with its own
// listening default.
func (c *serveConfig) bindWith(f *flags, listenDefault string) {
	c.db.bind(f, true)
	f.String(&c.jwtSecret, "jwt-secret", "JWT_SECRET", "", "HS256 secret of Koordi's API tokens, at least 32 bytes")
	f.String(&c.jwtPublicKey, "jwt-public-key-file", "JWT_PUBLIC_KEY_FILE", "", "PEM file of RS256/ES256 public keys (optional)")
	f.String(&c.listenAddr, "listen-addr", "LISTEN_ADDR", listenDefault, "HTTP address for /socket.io/, /healthz, /readyz, /metrics")
	f.String(&c.frontendURL, "frontend-url", "FRONTEND_URL", "http://localhost:5173", "allowed browser origins, comma-separated")
	f.Duration(&c.replayWindow, "replay-window", "REPLAY_WINDOW", 2*time.Minute, "how long reconnecting clients can recover missed events")
	f.String(&c.natsURL, "nats-url", "NATS_URL", "", "NATS server for multi-node fan-out (unset: single node)")
	f.Int(&c.rateLimit, "rate-limit", "RATE_LIMIT", 100, "client events per socket per minute; 0: no limit")
	f.Int(&c.readyMaxLag, "ready-max-lag-bytes", "READY_MAX_LAG_BYTES", 64<<20, "replication lag above which /readyz fails")
	f.Duration(&c.shutdownGrace, "shutdown-grace", "SHUTDOWN_GRACE", 10*time.Second, "how long SIGTERM waits for sockets and the final LSN confirmation")
}

// validate reports the first setting the user must fix.
func (c *serveConfig) validate() error {
	if c.db.url == "" {
		return userErr("DATABASE_URL is not set (flag --database-url)")
	}
	if c.jwtSecret == "" && c.jwtPublicKey == "" {
		return userErr("JWT_SECRET is not set (flag --jwt-secret): use the secret Koordi's API signs tokens with")
	}
	if c.jwtSecret != "" && len(c.jwtSecret) < 32 {
		return userErr("JWT_SECRET is %d bytes; at least 32 are required", len(c.jwtSecret))
	}
	if c.replayWindow < 0 {
		return userErr("REPLAY_WINDOW must not be negative")
	}
	if c.natsURL != "" {
		return userErr("NATS_URL is set, but multi-node fan-out is not available in this version; unset it to run a single node")
	}
	return nil
}

func (c *serveConfig) origins() []string {
	var out []string
	for _, o := range strings.Split(c.frontendURL, ",") {
		if o = strings.TrimSpace(o); o != "" {
			out = append(out, strings.TrimRight(o, "/"))
		}
	}
	return out
}

func runServe(ctx context.Context, env *environment, args []string) error {
	var cfg serveConfig
	f := newFlags(env, "serve", "Stream Koordi's committed changes from PostgreSQL to Socket.IO clients.")
	cfg.bind(f)
	if err := f.parse(args); err != nil {
		return err
	}
	if err := cfg.validate(); err != nil {
		return err
	}
	logger, err := newLogger(env, cfg.db.logFormat, cfg.db.logLevel)
	if err != nil {
		return err
	}
	srv, err := newServer(cfg, logger)
	if err != nil {
		return err
	}
	return srv.run(ctx)
}

// server is `serve` assembled: the consumer feeding the gateway through
// roomSink, and the HTTP endpoints.
type server struct {
	cfg      serveConfig
	log      *slog.Logger
	registry *prometheus.Registry
	consumer *cdc.Consumer
	gateway  *gateway.Gateway
	sink     *roomSink
	started  atomic.Bool // the consumer caught up once: sockets are accepted
	status   func() cdc.Status

	// Set between newServer and run, by the command.
	pages    http.Handler // served at "/" when set (the inspector)
	listener net.Listener // used instead of listening on cfg.listenAddr when set
}

func newServer(cfg serveConfig, logger *slog.Logger) (*server, error) {
	registry := prometheus.NewRegistry()
	registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	var publicKeys []byte
	if cfg.jwtPublicKey != "" {
		b, err := os.ReadFile(cfg.jwtPublicKey)
		if err != nil {
			return nil, userErr("JWT_PUBLIC_KEY_FILE: %v", err)
		}
		publicKeys = b
	}
	// The sink's gateway is set once both exist: the gateway reads the
	// consumer's state, the consumer reports to the sink. Neither calls the
	// other before Run.
	sink := &roomSink{log: logger.With("component", "rooms")}
	consumer, err := cdc.New(cdc.Config{
		OnStream:    sink.streamFrom,
		OnReset:     sink.reset,
		ConnString:  cfg.db.url,
		SlotName:    cfg.db.slot,
		Publication: cfg.db.publication,
		Retain:      cfg.replayWindow,
		Logger:      logger.With("component", "cdc"),
		Registerer:  registry,
	})
	if err != nil {
		return nil, userError{err}
	}
	gw, err := gateway.New(gateway.Config{
		JWTSecret:        []byte(cfg.jwtSecret),
		JWTPublicKeysPEM: publicKeys,
		Memberships:      stateMemberships{consumer.State()},
		ReplayWindow:     gatewayWindow(cfg.replayWindow),
		RateLimit:        gatewayRateLimit(cfg.rateLimit),
		AllowedOrigins:   cfg.origins(),
		Logger:           logger.With("component", "gateway"),
		Registerer:       registry,
	})
	if err != nil {
		return nil, userError{err}
	}
	sink.rooms = gw
	srv := &server{
		cfg: cfg, log: logger, registry: registry,
		consumer: consumer, gateway: gw,
		sink: sink, status: consumer.Status,
	}
	if cfg.inspector {
		srv.pages = inspector.New(inspector.Config{Metrics: registry, Mode: "serve", Logger: logger.With("component", "inspector")})
	}
	return srv, nil
}

func (s *server) handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/socket.io/", s.whenCaughtUp(s.gateway.Handler()))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/readyz", s.readyz)
	mux.Handle("/metrics", promhttp.HandlerFor(s.registry, promhttp.HandlerOpts{Registry: s.registry}))
	if s.pages != nil {
		mux.Handle("/", s.pages)
	}
	return mux
}

// whenCaughtUp answers 503 until the consumer has bootstrapped the
// membership state and caught up with the WAL that existed when it started
// streaming (see awaitCatchUp). A socket accepted earlier would join no
// calendar room, or be sent the replay window decoded again after a restart
// as if it were live. socket.io-client retries HTTP errors, so clients
// connect as soon as the service is ready.
func (s *server) whenCaughtUp(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.started.Load() {
			w.Header().Set("Retry-After", "1")
			http.Error(w, "starting: replication is catching up", http.StatusServiceUnavailable)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// awaitCatchUp opens the gateway to sockets once the consumer streams and
// has handed off everything up to the server's WAL position first seen
// while streaming. Until then it decodes the replay window again after a
// restart (and any backlog): those events go into the gateway's window for
// recovering sessions, never to fresh sockets as if they had just happened.
func (s *server) awaitCatchUp(ctx context.Context) error {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	var target uint64
	for {
		st := s.status()
		if target == 0 && st.Streaming && st.ServerLSN > 0 {
			target = st.ServerLSN
		}
		if target != 0 && st.Streaming && st.HandedOffLSN >= target {
			s.started.Store(true)
			s.log.Info("caught up: accepting sockets", "lsn", fmt.Sprintf("%X/%X", target>>32, uint32(target)))
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// readyz is ready while replication streams and the lag is under the
// threshold: a node that is far behind would send stale events.
func (s *server) readyz(w http.ResponseWriter, _ *http.Request) {
	st := s.consumer.Status()
	var lag uint64
	if st.ServerLSN > st.HandedOffLSN {
		lag = st.ServerLSN - st.HandedOffLSN
	}
	switch {
	case !st.Streaming:
		http.Error(w, "not ready: replication is not streaming "+st.LastError, http.StatusServiceUnavailable)
	case !s.started.Load():
		http.Error(w, "not ready: catching up with the WAL written before the start", http.StatusServiceUnavailable)
	case lag > uint64(s.cfg.readyMaxLag):
		http.Error(w, fmt.Sprintf("not ready: replication lag %d bytes", lag), http.StatusServiceUnavailable)
	default:
		fmt.Fprintf(w, "ready: lag %d bytes\n", lag)
	}
}

// run serves until ctx ends, then stops in the order that loses nothing:
// stop accepting, close sockets (clients reconnect elsewhere or to the next
// process and recover), stop the consumer, which confirms what was handed off.
func (s *server) run(ctx context.Context) error {
	ln := s.listener
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", s.cfg.listenAddr); err != nil {
			return userErr("listen on %s: %v", s.cfg.listenAddr, err)
		}
	}
	httpServer := &http.Server{Handler: s.handler(), ReadHeaderTimeout: 10 * time.Second}
	s.log.Info("listening", "addr", ln.Addr().String(), "slot", s.cfg.db.slot, "publication", s.cfg.db.publication)

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		err := s.consumer.Run(gctx, s.sink)
		if err != nil && cdc.IsConfigError(err) {
			return userError{err}
		}
		return err
	})
	g.Go(func() error { return s.awaitCatchUp(gctx) })
	g.Go(func() error {
		if err := httpServer.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("http server: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.shutdownGrace)
		defer cancel()
		s.log.Info("shutting down")
		// Both at once: http.Server.Shutdown closes the listener, then waits
		// for active requests, which include long-polling GETs that only
		// the gateway's Shutdown ends; it does not wait for hijacked
		// WebSocket connections, which the gateway closes too.
		gwErr := make(chan error, 1)
		go func() { gwErr <- s.gateway.Shutdown(stopCtx) }()
		httpErr := httpServer.Shutdown(stopCtx)
		return errors.Join(httpErr, <-gwErr)
	})
	err := g.Wait()
	if ctx.Err() != nil && (err == nil || errors.Is(err, context.Canceled)) {
		s.log.Info("stopped")
		return nil
	}
	return err
}

// gatewayWindow maps REPLAY_WINDOW to the gateway's setting, where zero
// means its default: REPLAY_WINDOW=0 turns replay off, as it makes the
// consumer confirm every transaction on hand-off.
func gatewayWindow(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}

// gatewayRateLimit maps RATE_LIMIT=0, "no limit" to an operator, to the
// gateway's "off" (negative; its zero means the default).
func gatewayRateLimit(n int) int {
	if n == 0 {
		return -1
	}
	return n
}
