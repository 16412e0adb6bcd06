package gateway

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/koordi/koordi-realtime/gateway/auth"
	"github.com/koordi/koordi-realtime/gateway/socketio"
	"github.com/koordi/koordi-realtime/schema"
)

// Namespace is the Socket.IO namespace Koordi's client uses.
const Namespace = "/"

// Config configures a Gateway. Zero values are the documented defaults.
type Config struct {
	// Config is the protocol layer's: origins allowed for CORS and WebSocket
	// (FRONTEND_URL), heartbeat, connect timeout, payload, attachment and
	// queue bounds, and the Logger (one line per state change; nil discards;
	// tokens are never logged). See socketio.Config and engineio.Config for
	// the defaults.
	socketio.Config

	// JWTSecret is the HS256 secret Koordi's API signs tokens with
	// (JWT_SECRET), at least 32 bytes. It also keys the recovery pids.
	JWTSecret []byte
	// JWTPublicKeysPEM optionally holds RS256/ES256 public keys (PEM).
	JWTPublicKeysPEM []byte
	// JWTLeeway tolerates clock skew on exp/nbf. Default 0.
	JWTLeeway time.Duration
	// PIDKey keys the recovery pids. Default: derived from JWTSecret; if
	// that is empty too, a random key, so sessions recover only within this
	// process.
	PIDKey []byte

	// MaxSocketsPerUser bounds the sockets one user holds
	// (MAX_SOCKETS_PER_USER); a connect beyond it closes the user's oldest
	// socket, with a reason. 0 (or negative): no limit.
	MaxSocketsPerUser int

	// ReplayWindow is how long published events stay available to
	// reconnecting clients. 0 (or negative) turns replay off, as it makes
	// cdc confirm every transaction on hand-off: one meaning for both sides.
	// serve's REPLAY_WINDOW defaults to 2m.
	ReplayWindow time.Duration
	// ReplayMaxEvents bounds the window's length. Default 100,000.
	ReplayMaxEvents int
	// ReplayMaxBytes bounds the window's memory. Default 64 MiB.
	ReplayMaxBytes int

	// RateLimit is the number of client events per minute allowed to one
	// Engine.IO connection, whose Socket.IO CONNECTs count too (refused
	// ones included), and to one user over all its sockets on this node:
	// token buckets of that size refilled over a minute, one per connection
	// and one per user (see ratelimit.go). 0 (or negative) sets no limit.
	// serve's RATE_LIMIT defaults to 100.
	RateLimit int
	// AbuseLimit is how many refusals by the rate limit within a minute on
	// one connection close it: a refused event's socket is disconnected
	// first (a server DISCONNECT, which stops the client's reconnection), a
	// refused CONNECT's CONNECT_ERROR is sent first. Default: RateLimit.
	AbuseLimit int

	// Registerer receives the koordi_gateway_* metrics; nil registers none.
	Registerer prometheus.Registerer
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

func (c *Config) setDefaults() {
	if c.ReplayMaxEvents <= 0 {
		c.ReplayMaxEvents = 100_000
	}
	if c.ReplayMaxBytes <= 0 {
		c.ReplayMaxBytes = 64 << 20
	}
	if c.AbuseLimit <= 0 {
		c.AbuseLimit = max(c.RateLimit, 1)
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Gateway serves Koordi's Socket.IO clients. Build it with New.
type Gateway struct {
	cfg      Config
	log      *slog.Logger
	verifier *auth.Verifier
	pidKey   []byte
	instance [8]byte
	// started bounds the latency histogram: a transaction committed before
	// the process started is a re-decoded one (the replay window after a
	// restart); its age measures the downtime, not delivery.
	started time.Time
	server  *socketio.Server
	metrics *metrics

	// ctx ends at Shutdown; it ends the catch-up goroutines.
	ctx      context.Context
	cancel   context.CancelFunc
	catchUps sync.WaitGroup

	pubMu sync.Mutex // see the lock order in doc.go
	pend  pending    // PublishBatch's frames per socket, under pubMu
	// held is what PublishBehind calls collected and did not queue yet,
	// queued by the next publication, by release's timer (holdTimer, armed
	// while anything is held) or before a Reset or a membership load; under
	// pubMu.
	held      batch
	holdTimer *time.Timer
	idx       *index
	window    *window
	closed    atomic.Bool
	// gapWarned: a session from before a gap in the stream was told to
	// refetch since the last gap (said once per gap, not per socket).
	gapWarned atomic.Bool
}

// New validates cfg and builds a Gateway.
func New(cfg Config) (*Gateway, error) {
	cfg.setDefaults()
	v, err := auth.NewVerifier(auth.Config{
		Secret:        cfg.JWTSecret,
		PublicKeysPEM: cfg.JWTPublicKeysPEM,
		Leeway:        cfg.JWTLeeway,
		Now:           cfg.Now,
	})
	if err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	g := &Gateway{cfg: cfg, log: cfg.Logger, verifier: v, idx: newIndex(), started: cfg.Now()}
	switch {
	case len(cfg.PIDKey) > 0:
		g.pidKey = derivePIDKey(cfg.PIDKey)
	case len(cfg.JWTSecret) > 0:
		g.pidKey = derivePIDKey(cfg.JWTSecret)
	default:
		g.pidKey = make([]byte, 32)
		_, _ = rand.Read(g.pidKey)
		g.log.Warn("no JWT secret or PIDKey: sessions recover only within this process (a restart sends sync:reset)")
	}
	_, _ = rand.Read(g.instance[:])
	maxEvents, maxBytes := cfg.ReplayMaxEvents, cfg.ReplayMaxBytes
	if cfg.ReplayWindow <= 0 {
		maxEvents, maxBytes = 0, 0
	}
	g.window = newWindow(cfg.ReplayWindow, maxEvents, maxBytes)
	g.ctx, g.cancel = context.WithCancel(context.Background())
	g.metrics = newMetrics(cfg.Registerer, g)
	g.server = socketio.NewServer(cfg.Config)
	g.server.Handle(Namespace, (*handler)(g))
	g.server.HandleOthers((*others)(g))

	return g, nil
}

// Handler serves the Socket.IO endpoint; mount it at /socket.io/.
func (g *Gateway) Handler() http.Handler { return g.server }

// ResumeAfter tells the gateway that every event with an offset after off
// will be published to it (again), as the serve wiring knows from the
// replication slot's start position. Called before the first Publish, it lets
// sessions that began in another process (before a restart) recover at once;
// without it they can recover from the first published event on.
func (g *Gateway) ResumeAfter(off schema.Offset) { g.window.resumeAfter(off) }

// Sockets reports the number of sockets connected.
func (g *Gateway) Sockets() int {
	g.idx.mu.RLock()
	defer g.idx.mu.RUnlock()
	return g.idx.sockets
}

// Shutdown closes every socket at the transport level, a reason clients
// reconnect on (to this process's successor), and waits for the catch-up
// goroutines. It is idempotent.
func (g *Gateway) Shutdown(ctx context.Context) error {
	if g.closed.CompareAndSwap(false, true) {
		g.cancel()
	}
	// What a backlog held is queued now, so that the sockets' final flush
	// writes it.
	g.pubMu.Lock()
	g.release()
	g.pubMu.Unlock()
	// A catch-up starts under idx.mu and not once closed is set: after
	// this barrier none is added to catchUps while Wait below runs.
	g.idx.mu.Lock()
	g.idx.mu.Unlock()
	if err := g.server.Shutdown(ctx); err != nil {
		return fmt.Errorf("gateway shutdown: %w", err)
	}
	done := make(chan struct{})
	go func() { g.catchUps.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		return fmt.Errorf("gateway shutdown: %w", ctx.Err())
	}
	return nil
}
