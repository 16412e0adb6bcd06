// Package service assembles one koordi-realtime node: the replication
// consumer (package cdc) feeding the gateway, behind the HTTP endpoints
// /socket.io/, /healthz, /readyz and /metrics, plus optional pages at "/"
// (the inspector). `koordi-realtime serve`, `koordi-realtime dev` and
// koordi-bench's in-process server all run this assembly, so the server the
// benchmarks profile is the one serve runs.
//
// # Wiring
//
// Each transaction the consumer hands off goes to [gateway.Gateway.Publish]
// as it is: its events and the room moves derivation attached to them.
// At the consumer's first stream start, before anything is delivered, the
// gateway gets the accepted memberships of a database snapshot
// ([cdc.ReadMemberships]), which Publish brings forward with the moves of
// every transaction the snapshot did not see: connects and join:calendar are
// checked against it, with no query. The first stream start also tells the
// gateway from which position every event will be published (sessions of a
// previous process recover at once). A gap in the stream (a lost slot, a
// publication re-created, a table back in it) becomes sync:reset, with the
// memberships read again.
//
// # Catch-up gate and readiness
//
// /socket.io/ answers 503 (Retry-After: 1) until the consumer signals that it
// has caught up ([cdc.Consumer.CaughtUp]): a socket accepted earlier would
// join no calendar room, or be sent the replay window decoded again after a
// restart as if it had just happened. socket.io-client retries HTTP errors,
// so clients connect as soon as the node is ready. /readyz answers 200 once
// caught up while replication streams with a lag under Config.ReadyMaxLag
// and every watched table is streamed fully (in the publication, replica
// identity FULL), else 503 with the reason.
//
// # Shutdown
//
// When the context given to Run ends, the node stops in the order that
// loses nothing: stop accepting, close every socket with a reason clients
// reconnect on (to another node or the next process, where they recover),
// then stop the consumer, which confirms what was handed off.
package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"

	"github.com/koordi/koordi-realtime/cdc"
	"github.com/koordi/koordi-realtime/cmd/internal/idlemem"
	"github.com/koordi/koordi-realtime/gateway"
	"github.com/koordi/koordi-realtime/gateway/netlimit"
	"github.com/koordi/koordi-realtime/schema"
)

// ErrConfig marks a Config the user must fix; New wraps it.
var ErrConfig = errors.New("invalid configuration")

// Config configures a node. Zero values are documented defaults, except
// DatabaseURL, the JWT keys in Gateway, and Registry.
type Config struct {
	// DatabaseURL is Koordi's database (DATABASE_URL).
	DatabaseURL string
	// SlotName and Publication: see cdc.Config (defaults koordi_realtime).
	SlotName    string
	Publication string
	// ReplayWindow is how long reconnecting clients can recover missed
	// events, also across a restart: the gateway keeps that window and the
	// slot's confirmed position trails by it. 0 turns replay off.
	ReplayWindow time.Duration
	// Gateway holds the socket side's settings: JWT keys, rate limit,
	// origins and protocol settings. Its Memberships, ReplayWindow, Logger
	// and Registerer are set by New.
	Gateway gateway.Config
	// TableCheckInterval is how often the watched tables are checked (see
	// cdc.Config.CheckInterval); default 30s.
	TableCheckInterval time.Duration
	// BulkEvents bounds the events one transaction gives one room
	// (BULK_EVENTS; see cdc.Config).
	BulkEvents int
	// MaxConnections bounds the open HTTP connections (MAX_CONNECTIONS);
	// beyond it new ones are reset at once. 0 means no limit.
	MaxConnections int
	// ReadyMaxLag is the replication lag above which /readyz answers 503;
	// default 64 MiB.
	ReadyMaxLag uint64
	// ShutdownGrace bounds closing sockets and the final confirmation when
	// Run's context ends; default 10s.
	ShutdownGrace time.Duration
	// IdleMemoryRelease is how long the process must be quiet before its
	// free heap memory goes back to the OS (see package idlemem): 0 means
	// 5s, a negative value never.
	IdleMemoryRelease time.Duration
	// Cluster, if set, makes the node one of several sharing the slot
	// through NATS JetStream (see cluster.go); nil: a single node.
	Cluster *ClusterConfig
	// Pages, if set, is served at "/" (the inspector).
	Pages http.Handler
	// Logger receives one line per state change; nil discards.
	Logger *slog.Logger
	// Registry receives every metric of the node and is what /metrics
	// serves. Required.
	Registry *prometheus.Registry
}

// Service is one node: consumer, gateway and HTTP endpoints.
type Service struct {
	cfg     Config
	log     *slog.Logger
	gateway *gateway.Gateway
	// consumer streams from the slot: always in a single node; in a
	// cluster, the current term's while this node leads, else nil.
	consumer atomic.Pointer[cdc.Consumer]
	cluster  *clusterNode // nil: a single node
	started  atomic.Bool  // caught up: sockets are accepted
	resumed  atomic.Bool  // the first stream start was relayed to the gateway
	runCtx   atomic.Pointer[context.Context]
}

// New builds the node; it does not connect (Run does).
func New(cfg Config) (*Service, error) {
	if cfg.Registry == nil {
		return nil, fmt.Errorf("%w: no metrics registry", ErrConfig)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.ReadyMaxLag == 0 {
		cfg.ReadyMaxLag = 64 << 20
	}
	if cfg.ShutdownGrace <= 0 {
		cfg.ShutdownGrace = 10 * time.Second
	}
	s := &Service{cfg: cfg, log: cfg.Logger}
	gcfg := cfg.Gateway
	if gcfg.MaxSessions == 0 {
		// Every session holds a connection, or is about to (a poll between
		// two requests): more sessions than connections is a client
		// handshaking without ever connecting.
		gcfg.MaxSessions = cfg.MaxConnections
	}
	gcfg.ReplayWindow = cfg.ReplayWindow
	gcfg.Logger = cfg.Logger.With("component", "gateway")
	gcfg.Registerer = cfg.Registry
	gw, err := gateway.New(gcfg)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	s.gateway = gw
	if cfg.Cluster != nil {
		if s.cluster, err = newClusterNode(s, *cfg.Cluster); err != nil {
			return nil, err
		}
		return s, nil
	}
	ccfg := s.cdcConfig()
	ccfg.OnStream = s.streamFrom
	ccfg.OnReset = s.gap
	consumer, err := cdc.New(ccfg)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	s.consumer.Store(consumer)
	return s, nil
}

// cdcConfig is the consumer's configuration, without the wiring of a mode.
func (s *Service) cdcConfig() cdc.Config {
	return cdc.Config{
		ConnString:    s.cfg.DatabaseURL,
		SlotName:      s.cfg.SlotName,
		Publication:   s.cfg.Publication,
		Retain:        max(s.cfg.ReplayWindow, 0),
		BulkEvents:    s.cfg.BulkEvents,
		CheckInterval: s.cfg.TableCheckInterval,
		Logger:        s.cfg.Logger.With("component", "cdc"),
		Registerer:    s.cfg.Registry,
	}
}

// streamFrom is cdc.Config.OnStream. Only the first start matters to the
// gateway: later ones (reconnects) resend what it has already published,
// which it drops as duplicates. It runs before anything of the stream is
// delivered, so the memberships are in place for the first Publish.
func (s *Service) streamFrom(lsn uint64) {
	if s.resumed.CompareAndSwap(false, true) {
		if snap := s.readMemberships(); snap != nil {
			s.gateway.LoadMemberships(snap)
		}
		s.gateway.ResumeAfter(schema.Offset{LSN: lsn})
	}
}

// gap is cdc.Config.OnReset: changes may have been lost, memberships among
// them, so they are read again with the reset.
func (s *Service) gap(reason string) {
	s.gateway.Reset(reason, s.readMemberships())
}

// readMemberships reads the memberships snapshot, retrying while the
// database cannot answer (the stream cannot go on without it either); nil
// once Run's context has ended.
func (s *Service) readMemberships() *schema.MembershipSnapshot {
	ctx := context.Background()
	if p := s.runCtx.Load(); p != nil {
		ctx = *p
	}
	for wait := 100 * time.Millisecond; ; wait = min(2*wait, 5*time.Second) {
		snap, err := cdc.ReadMemberships(ctx, s.cfg.DatabaseURL)
		if err == nil {
			return &snap
		}
		if ctx.Err() != nil {
			return nil
		}
		s.log.Warn("read memberships; retrying", "backoff", wait, "error", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}

// Handler serves every endpoint of the node.
func (s *Service) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/socket.io/", s.whenCaughtUp(s.gateway.Handler()))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/readyz", s.readyz)
	mux.Handle("/metrics", promhttp.HandlerFor(s.cfg.Registry, promhttp.HandlerOpts{Registry: s.cfg.Registry}))
	if s.cfg.Pages != nil {
		mux.Handle("/", s.cfg.Pages)
	}
	return boundDrain(mux, drainTimeout)
}

// drainTimeout bounds how long the server reads a request body its handler
// left unread.
const drainTimeout = 5 * time.Second

// boundDrain bounds, at d, net/http's read of what a handler left of a
// request body: it reads up to 256 KiB of it to keep the connection, when the
// response's header goes out (at the handler's first 2 KiB or Flush) or
// after the handler. The server has no ReadTimeout, which would cut long
// polls and WebSockets, so that read had no deadline: a request declaring a
// body it never sends (POST /healthz with Content-Length: 10) held its
// connection for ever. The deadline is set before the handler, for a drain
// within it, and again after, for one at its end; a handler that reads the
// body sets its own (the engine's polling POST). Nothing reads the
// connection meanwhile: net/http's background read starts only once the
// body is read to its end. A WebSocket upgrade is left alone, its
// connection being the WebSocket's from then on.
func boundDrain(h http.Handler, d time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength == 0 || r.Header.Get("Upgrade") != "" { // no body, declared or chunked (-1)
			h.ServeHTTP(w, r)
			return
		}
		rc := http.NewResponseController(w)
		_ = rc.SetReadDeadline(time.Now().Add(d))
		h.ServeHTTP(w, r)
		_ = rc.SetReadDeadline(time.Now().Add(d))
	})
}

// whenCaughtUp answers 503 until the consumer has caught up (see the package
// documentation).
func (s *Service) whenCaughtUp(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.started.Load() {
			w.Header().Set("Retry-After", "1")
			http.Error(w, "starting: replication is catching up", http.StatusServiceUnavailable)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// readyz is ready once caught up while replication streams (in a cluster:
// while the feed is current) with a lag under the threshold and every
// watched table streamed fully: a node far behind would send stale events.
func (s *Service) readyz(w http.ResponseWriter, _ *http.Request) {
	notReady := func(reason string) { http.Error(w, "not ready: "+reason, http.StatusServiceUnavailable) }
	if !s.started.Load() {
		notReady("catching up with what was written before the start")
		return
	}
	if s.cluster != nil {
		if ok, why := s.cluster.sub.Current(); !ok {
			notReady(why)
			return
		}
	}
	c := s.consumer.Load()
	if c == nil {
		fmt.Fprintln(w, "ready: standing by, the feed is current")
		return
	}
	st := c.Status()
	var lag uint64
	if st.ServerLSN > st.HandedOffLSN {
		lag = st.ServerLSN - st.HandedOffLSN
	}
	switch {
	case !st.Streaming && s.cluster == nil:
		// The error itself stays in the log: it names the role, the
		// database and its address, and /readyz answers anyone.
		notReady("replication is not streaming (its error is in the log)")
	case len(st.Problems) > 0:
		// Some changes are not streamed, or not derivable: clients would
		// miss them silently.
		notReady(strings.Join(st.Problems, "; "))
	case lag > s.cfg.ReadyMaxLag:
		notReady(fmt.Sprintf("replication lag %d bytes", lag))
	default:
		fmt.Fprintf(w, "ready: lag %d bytes\n", lag)
	}
}

// Run serves on ln until ctx ends, then shuts down as the package
// documentation says. An error the user must fix (the consumer's
// [cdc.IsConfigError]) is returned as it is.
func (s *Service) Run(ctx context.Context, ln net.Listener) error {
	ln, err := netlimit.NewListener(ln, netlimit.Config{
		MaxConns:   s.cfg.MaxConnections,
		Registerer: s.cfg.Registry,
		Logger:     s.log.With("component", "http"),
	})
	if err != nil {
		return fmt.Errorf("listener: %w", err)
	}
	s.warnFileLimit()
	httpServer := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		// Keep-alive connections left idle are closed; long polls and
		// WebSockets are bounded by the protocol layer itself (a read or
		// write timeout here would cut them).
		IdleTimeout:    30 * time.Second,
		MaxHeaderBytes: 64 << 10,
	}
	s.log.Info("listening", "addr", ln.Addr().String(), "slot", s.cfg.SlotName, "publication", s.cfg.Publication)

	g, gctx := errgroup.WithContext(ctx)
	s.runCtx.Store(&gctx)
	caughtUp := s.runSingle(gctx, g)
	if s.cluster != nil {
		if caughtUp, err = s.cluster.run(gctx, g); err != nil {
			return err
		}
	}
	g.Go(func() error {
		select {
		case <-caughtUp:
			s.started.Store(true)
			s.log.Info("caught up: accepting sockets")
		case <-gctx.Done():
		}
		return nil
	})
	idle := idlemem.New(idlemem.Config{
		Quiet:      s.cfg.IdleMemoryRelease,
		Logger:     s.log.With("component", "memory"),
		Registerer: s.cfg.Registry,
	})
	g.Go(func() error { return idle.Run(gctx) })
	g.Go(func() error {
		if err := httpServer.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("http server: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.ShutdownGrace)
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
	err = g.Wait()
	if ctx.Err() != nil && (err == nil || errors.Is(err, context.Canceled)) {
		s.log.Info("stopped")
		return nil
	}
	return err
}

// runSingle streams from the slot straight into the gateway; in a cluster it
// does nothing (the feed does). It returns the catch-up signal.
func (s *Service) runSingle(ctx context.Context, g *errgroup.Group) <-chan struct{} {
	c := s.consumer.Load()
	if s.cluster != nil || c == nil {
		return nil
	}
	g.Go(func() error { return c.Run(ctx, gatewaySink{s.gateway}) })
	return c.CaughtUp()
}

// gatewaySink hands the stream's transactions to the gateway, telling it
// when more are already decoded behind a batch (cdc.BacklogSink).
type gatewaySink struct{ g *gateway.Gateway }

var _ cdc.BacklogSink = gatewaySink{}

func (s gatewaySink) Deliver(ctx context.Context, tx schema.Transaction) error {
	return s.g.Publish(ctx, tx)
}

func (s gatewaySink) DeliverBatch(ctx context.Context, txs []schema.Transaction) error {
	return s.g.PublishBatch(ctx, txs)
}

func (s gatewaySink) DeliverBatchBehind(ctx context.Context, txs []schema.Transaction, behind bool) error {
	return s.g.PublishBehind(ctx, txs, behind)
}

// warnFileLimit says when the process may run out of file descriptors before
// MaxConnections is reached: accept errors are then backed off, but the
// operator should raise the limit (or lower MAX_CONNECTIONS).
func (s *Service) warnFileLimit() {
	var lim syscall.Rlimit
	if s.cfg.MaxConnections <= 0 || syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim) != nil {
		return
	}
	if need := uint64(s.cfg.MaxConnections) + 256; lim.Cur < need {
		s.log.Warn("the open-file limit is below MAX_CONNECTIONS: raise it (ulimit -n) or lower MAX_CONNECTIONS",
			"nofile", lim.Cur, "max_connections", s.cfg.MaxConnections)
	}
}
