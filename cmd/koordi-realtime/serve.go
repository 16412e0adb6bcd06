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
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/koordi/koordi-realtime/cdc"
	"github.com/koordi/koordi-realtime/cmd/internal/cli"
	"github.com/koordi/koordi-realtime/cmd/internal/service"
	"github.com/koordi/koordi-realtime/gateway"
	"github.com/koordi/koordi-realtime/gateway/inspector"
	"github.com/koordi/koordi-realtime/gateway/netlimit"
)

// serveConfig is everything `serve` reads from flags and environment.
type serveConfig struct {
	db             dbConfig
	jwtSecret      string
	jwtPublicKey   string
	listenAddr     string
	frontendURL    string
	replayWindow   time.Duration
	natsURL        string
	natsStream     string
	natsReplicas   int
	recoverySecret string
	nodeName       string
	rateLimit      int
	readyMaxLag    int
	shutdownGrace  time.Duration
	idleRelease    time.Duration
	inspector      bool
	sameOrigin     bool
	maxConnections int
	bulkEvents     int
	maxSockets     int
	tableCheck     time.Duration
}

func (c *serveConfig) bind(f *cli.Flags) {
	c.bindWith(f, ":3000", netlimit.DefaultMaxConns)
	f.Bool(&c.inspector, "inspector", "INSPECTOR", false, "serve the inspector page at / (a browser view of sockets, events and lag)")
}

// bindWith binds every serve setting; dev shares them with its own
// defaults for the address and the connection bound.
func (c *serveConfig) bindWith(f *cli.Flags, listenDefault string, maxConnsDefault int) {
	c.db.bind(f, true)
	f.String(&c.jwtSecret, "jwt-secret", "JWT_SECRET", "", "HS256 secret of Koordi's API tokens, at least 32 bytes")
	f.String(&c.jwtPublicKey, "jwt-public-key-file", "JWT_PUBLIC_KEY_FILE", "", "PEM file of RS256/ES256 public keys (optional)")
	f.String(&c.listenAddr, "listen-addr", "LISTEN_ADDR", listenDefault, "HTTP address for /socket.io/, /healthz, /readyz, /metrics")
	f.String(&c.frontendURL, "frontend-url", "FRONTEND_URL", "http://localhost:5173", "allowed browser origins, comma-separated")
	f.Duration(&c.replayWindow, "replay-window", "REPLAY_WINDOW", 2*time.Minute, "how long reconnecting clients can recover missed events")
	f.String(&c.natsURL, "nats-url", "NATS_URL", "", "NATS (JetStream, nats-server 2.10+) shared by several nodes of the service, comma-separated URLs (unset: a single node)")
	f.String(&c.natsStream, "nats-stream", "NATS_STREAM", "KOORDI_REALTIME", "JetStream stream of the nodes' feed (created or updated at start)")
	f.Int(&c.natsReplicas, "nats-replicas", "NATS_REPLICAS", 1, "replicas of the feed's stream on a NATS cluster (3 for production)")
	f.String(&c.recoverySecret, "recovery-secret", "RECOVERY_SECRET", "", "key of the recovery pids, at least 32 bytes, the same on every node (default: derived from JWT_SECRET; required with several nodes and only JWT_PUBLIC_KEY_FILE)")
	f.String(&c.nodeName, "node-name", "NODE_NAME", "", "this node's name in logs, metrics and the inspector (default: the host name and process id)")
	f.Int(&c.rateLimit, "rate-limit", "RATE_LIMIT", 100, "client events a minute per Engine.IO connection (its CONNECTs count too) and per user; 0: no limit")
	f.Duration(&c.tableCheck, "table-check-interval", "TABLE_CHECK_INTERVAL", 30*time.Second, "how often the watched tables' publication membership and replica identity are checked (also at every stream start)")
	f.Int(&c.bulkEvents, "bulk-events", "BULK_EVENTS", 1000, "events one transaction may give one room; a room that would get more gets one sync:reset instead; negative: no bound")
	f.Int(&c.maxSockets, "max-sockets-per-user", "MAX_SOCKETS_PER_USER", 50, "sockets one user may hold; a new one beyond it closes the oldest; 0: no limit")
	f.Int(&c.maxConnections, "max-connections", "MAX_CONNECTIONS", maxConnsDefault, "open HTTP connections at most; beyond it new ones are reset at once; 0: no limit")
	f.Bool(&c.sameOrigin, "allow-same-origin", "ALLOW_SAME_ORIGIN", false, "also allow browser pages of the server's own origin (scheme and host), for deployments serving the front end and /socket.io/ from one origin")
	f.Int(&c.readyMaxLag, "ready-max-lag-bytes", "READY_MAX_LAG_BYTES", 64<<20, "replication lag above which /readyz fails")
	f.Duration(&c.shutdownGrace, "shutdown-grace", "SHUTDOWN_GRACE", 10*time.Second, "how long SIGTERM waits for sockets and the final LSN confirmation")
	f.Duration(&c.idleRelease, "idle-memory-release", "IDLE_MEMORY_RELEASE", 5*time.Second, "how long the process must be quiet (allocating little) before it returns its free heap memory to the OS; 0: never")
}

// validate reports every setting the user must fix, at once (the value
// checks are in validate.go).
func (c *serveConfig) validate() error {
	var p cli.Problems
	if c.db.url == "" {
		p.Addf("DATABASE_URL is not set (flag --database-url)")
	}
	if c.jwtSecret == "" && c.jwtPublicKey == "" {
		p.Addf("JWT_SECRET is not set (flag --jwt-secret): use the secret Koordi's API signs tokens with")
	}
	if c.jwtSecret != "" && len(c.jwtSecret) < 32 {
		p.Addf("JWT_SECRET is %d bytes; at least 32 are required", len(c.jwtSecret))
	}
	if c.replayWindow < 0 {
		p.Addf("REPLAY_WINDOW must not be negative")
	}
	if c.recoverySecret != "" && len(c.recoverySecret) < 32 {
		p.Addf("RECOVERY_SECRET is %d bytes; at least 32 are required", len(c.recoverySecret))
	}
	if c.natsURL != "" && c.jwtSecret == "" && c.recoverySecret == "" {
		// Pids must verify on every node: without a shared secret each
		// node would make up its own key.
		p.Addf("RECOVERY_SECRET is not set: with several nodes (NATS_URL) and only JWT_PUBLIC_KEY_FILE, set the same RECOVERY_SECRET on every node")
	}
	c.checkValues(&p)
	return p.Err()
}

// idleRelease maps IDLE_MEMORY_RELEASE, where 0 means never, to
// service.Config's, where 0 is the default.
func idleRelease(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
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
	f := env.flags("serve", "Stream Koordi's committed changes from PostgreSQL to Socket.IO clients.")
	cfg.bind(f)
	if err := f.Parse(args); err != nil {
		return err
	}
	if err := cfg.validate(); err != nil {
		return err
	}
	logger, err := env.logger(cfg.db.logFormat, cfg.db.logLevel)
	if err != nil {
		return err
	}
	var pages func(*prometheus.Registry) http.Handler
	link := &inspectorLink{}
	if cfg.inspector {
		pages = func(reg *prometheus.Registry) http.Handler {
			return inspector.New(inspector.Config{Metrics: reg, Mode: "serve", Rooms: link.rooms, Logger: logger.With("component", "inspector")})
		}
	}
	svc, err := cfg.service(logger, pages)
	if err != nil {
		return err
	}
	link.svc = svc
	// Nothing listens before every setting and the database were checked.
	if err := preflight(ctx, svc); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.listenAddr)
	if err != nil {
		return cli.Errorf("listen on %s: %v", cfg.listenAddr, err)
	}
	return runService(ctx, svc, ln)
}

// service assembles the node from the settings, with the process's own
// registry (never the global one). pages, if set, builds what is served at
// "/" from that registry.
func (c *serveConfig) service(logger *slog.Logger, pages func(*prometheus.Registry) http.Handler) (*service.Service, error) {
	registry := prometheus.NewRegistry()
	registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	var publicKeys []byte
	if c.jwtPublicKey != "" {
		b, err := os.ReadFile(c.jwtPublicKey)
		if err != nil {
			return nil, cli.Errorf("JWT_PUBLIC_KEY_FILE: %v", err)
		}
		publicKeys = b
	}
	cfg := service.Config{
		DatabaseURL:  c.db.url,
		SlotName:     c.db.slot,
		Publication:  c.db.publication,
		ReplayWindow: c.replayWindow,
		Gateway: gateway.Config{
			JWTSecret:         []byte(c.jwtSecret),
			JWTPublicKeysPEM:  publicKeys,
			RateLimit:         c.rateLimit,
			MaxSocketsPerUser: c.maxSockets,
		},
		BulkEvents:         c.bulkEvents,
		TableCheckInterval: c.tableCheck,
		MaxConnections:     c.maxConnections,
		ReadyMaxLag:        uint64(c.readyMaxLag),
		ShutdownGrace:      c.shutdownGrace,
		IdleMemoryRelease:  idleRelease(c.idleRelease),
		Logger:             logger,
		Registry:           registry,
	}
	cfg.Gateway.AllowedOrigins = c.origins()
	if c.recoverySecret != "" {
		cfg.Gateway.PIDKey = []byte(c.recoverySecret)
	}
	if c.natsURL != "" {
		node := c.nodeName
		if node == "" {
			node = defaultNodeName()
		}
		cfg.Cluster = &service.ClusterConfig{NATSURL: c.natsURL, Stream: c.natsStream, Replicas: c.natsReplicas, Node: node}
	}
	// Pages served by the node itself (the inspector) connect from its own
	// origin.
	cfg.Gateway.AllowSameOrigin = c.sameOrigin || pages != nil
	if pages != nil {
		cfg.Pages = pages(registry)
	}
	svc, err := service.New(cfg)
	if err != nil {
		return nil, cli.User(err)
	}
	return svc, nil
}

// runService runs the node until ctx ends; what the user must fix (the
// database not set up, the slot used elsewhere) is a user error.
func runService(ctx context.Context, svc *service.Service, ln net.Listener) error {
	err := svc.Run(ctx, ln)
	if err != nil && (cdc.IsConfigError(err) || errors.Is(err, service.ErrNATSUnreachable) || errors.Is(err, service.ErrConfig)) {
		return cli.User(err)
	}
	return err
}

// defaultNodeName is the host's name and the process id.
func defaultNodeName() string {
	host, err := os.Hostname()
	if err != nil {
		host = "node"
	}
	return fmt.Sprintf("%s-%d", host, os.Getpid())
}
