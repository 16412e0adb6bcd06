package service

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash/fnv"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/koordi/koordi-realtime/cdc"
	"github.com/koordi/koordi-realtime/cmd/internal/feed"
)

// Several nodes
//
// Every node started with the same DATABASE_URL, SLOT_NAME, JWT_SECRET and
// NATS_URL is one service. Each node is a candidate for the slot: the one
// whose replication session holds the leader lock streams and publishes each
// transaction to the JetStream feed (package feed); the others stand by,
// trying for the lock every 500 ms. Every node, the leader too, serves
// sockets and feeds its gateway from the feed alone, after loading the
// memberships of a database snapshot, so all nodes see the same events and
// moves in the same order. A leadership term ends when the replication
// session ends (PostgreSQL lost, SIGTERM) or a publish fails (NATS
// unreachable, another leader's message first): the node then stands by
// again, with a new consumer and a fresh state for its next term. A gap the
// term found and could not publish outlives it in the stream (owe).

// ErrNATSUnreachable means NATS_URL could not be reached at start.
var ErrNATSUnreachable = errors.New("cannot connect to NATS")

// ClusterConfig configures a node of several.
type ClusterConfig struct {
	NATSURL string
	Stream  string // NATS_STREAM; default KOORDI_REALTIME
	// Replicas of the stream on a NATS cluster; default 1.
	Replicas int
	// Node names this node in logs and metrics.
	Node string
	// WalSenderTimeout of the leader's replication session: how soon a
	// vanished leader frees the slot; default 5s.
	WalSenderTimeout time.Duration
}

type clusterNode struct {
	s       *Service
	cfg     ClusterConfig
	sub     *feed.Subscriber // made by run
	metrics *feed.Metrics
	leader  prometheus.Gauge
	owed    owedResets
	// gapKey signs the gaps a leader records in the stream for the next
	// (cdc.Config.GapKey): derived from the key every node shares.
	gapKey []byte
}

// owedResets are gaps a leadership term found and could neither publish
// (its publish failed, which ended it) nor record in the stream (PostgreSQL
// down too): this node's next term publishes them as soon as it leads. The
// consumer that found them is gone with its term, and the slot it created
// or resynced shows the next consumer nothing.
type owedResets struct {
	mu      sync.Mutex
	reasons []string
}

func (o *owedResets) add(reason string) {
	o.mu.Lock()
	o.reasons = append(o.reasons, reason)
	o.mu.Unlock()
}

// paid removes one occurrence of reason.
func (o *owedResets) paid(reason string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if i := slices.Index(o.reasons, reason); i >= 0 {
		o.reasons = slices.Delete(o.reasons, i, i+1)
	}
}

func (o *owedResets) list() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.reasons)
}

func newClusterNode(s *Service, cfg ClusterConfig) (*clusterNode, error) {
	if cfg.NATSURL == "" {
		return nil, fmt.Errorf("%w: no NATS URL", ErrConfig)
	}
	if cfg.Stream == "" {
		cfg.Stream = "KOORDI_REALTIME"
	}
	if cfg.WalSenderTimeout <= 0 {
		cfg.WalSenderTimeout = 5 * time.Second
	}
	secret := s.cfg.Gateway.PIDKey
	if len(secret) == 0 {
		secret = s.cfg.Gateway.JWTSecret
	}
	if len(secret) == 0 {
		return nil, fmt.Errorf("%w: several nodes need a key they share (JWT_SECRET or RECOVERY_SECRET)", ErrConfig)
	}
	n := &clusterNode{s: s, cfg: cfg, metrics: feed.NewMetrics(s.cfg.Registry), gapKey: deriveGapKey(secret)}
	n.leader = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "koordi_cluster_leader",
		Help: "1 on the node streaming from the replication slot, else 0.",
	})
	info := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "koordi_cluster_node_info",
		Help:        "This node's name (label node).",
		ConstLabels: prometheus.Labels{"node": cfg.Node},
	})
	info.Set(1)
	s.cfg.Registry.MustRegister(n.leader, info)
	return n, nil
}

// run connects to NATS, loads the memberships, and starts the feed's
// subscriber and the leadership loop in g. It returns the catch-up signal.
func (n *clusterNode) run(ctx context.Context, g *errgroup.Group) (<-chan struct{}, error) {
	log := n.s.log.With("component", "cluster", "node", n.cfg.Node)
	nc, err := nats.Connect(n.cfg.NATSURL,
		nats.Name("koordi-realtime "+n.cfg.Node),
		nats.MaxReconnects(-1), nats.ReconnectWait(250*time.Millisecond),
		// No buffering while disconnected: a leader's publish then fails at
		// once and ends its term, instead of leaving messages that land,
		// or are refused, long after the term they belong to.
		nats.ReconnectBufSize(-1),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) { log.Warn("NATS disconnected", "error", err) }),
		nats.ReconnectHandler(func(*nats.Conn) { log.Info("NATS reconnected") }))
	if err != nil {
		return nil, fmt.Errorf("%w at %s: %v", ErrNATSUnreachable, redactURL(n.cfg.NATSURL), err)
	}
	// Above the publisher's own in-flight bound (256), so that bound is
	// the one that applies: at this one a publish stalls and fails.
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(1024))
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	_, err = feed.EnsureStream(sctx, js, n.streamConfig())
	cancel()
	if err != nil {
		nc.Close()
		// Connected: the stream is what failed (JetStream off, more
		// replicas than servers, a bad name), not the connection.
		return nil, fmt.Errorf("%w: create or update the JetStream stream %q at %s: %v", ErrConfig, n.cfg.Stream, nc.ConnectedUrlRedacted(), err)
	}
	// The snapshot first, then the feed from before it: every transaction
	// the snapshot did not see comes after it, so through the feed.
	if snap := n.s.readMemberships(); snap != nil {
		n.s.gateway.LoadMemberships(snap)
	}
	n.sub = feed.NewSubscriber(feed.SubscriberConfig{
		JS: js, Stream: n.cfg.Stream, History: n.s.cfg.ReplayWindow, Gateway: n.s.gateway,
		OnReset: func(reason string) { n.s.gateway.Reset(reason, n.s.readMemberships()) },
		Recreate: func(ctx context.Context) error {
			_, err := feed.EnsureStream(ctx, js, n.streamConfig())
			return err
		},
		Logger: log, Metrics: n.metrics,
	})
	g.Go(func() error { return n.sub.Run(ctx) })
	g.Go(func() error { return n.lead(ctx, nc, js, log) })
	g.Go(func() error {
		<-ctx.Done()
		nc.Close()
		return nil
	})
	return n.sub.CaughtUp(), nil
}

// lead runs one leadership term after another: each a new consumer that
// stands by until it holds the lock, then streams into a new publisher.
func (n *clusterNode) lead(ctx context.Context, nc *nats.Conn, js jetstream.JetStream, log logger) error {
	key := lockKey(n.s.cfg.SlotName)
	// reached: some term of this process got as far as the leader lock (it
	// led or stood by), so the database was set up. A consumer that never
	// streamed calls every error of its first session a configuration
	// error, and a standby never streams: after that, a refused connection
	// (PostgreSQL restarting) or a table out of the publication is an
	// outage to wait out, not a reason to exit.
	var reached atomic.Bool
	wait := time.Second
	for {
		// Each term makes sure of the stream first: one deleted meanwhile is
		// created again (subscribers see a new stream and reset), and while
		// NATS is unreachable no term takes the slot only to fail at its
		// first publish and hand it on, over and over.
		if err := n.awaitStream(ctx, js, log); err != nil {
			return nil // ctx ended
		}
		term, cancel := context.WithCancelCause(ctx)
		pub := feed.NewPublisher(feed.PublisherConfig{
			JS: js, Stream: n.cfg.Stream, MaxPayload: nc.MaxPayload(), Fail: cancel,
			Logger: n.s.log.With("component", "feed", "node", n.cfg.Node), Metrics: n.metrics,
		})
		cc := n.s.cdcConfig()
		cc.LockKey = key
		cc.WalSenderTimeout = n.cfg.WalSenderTimeout
		cc.GapKey = n.gapKey
		var consumer *cdc.Consumer
		cc.OnReset = func(reason string) {
			if err := pub.Reset(term, reason); err != nil {
				// The failure ends the term; the gap must outlive it.
				n.owe(ctx, consumer, reason, err, log)
			}
		}
		consumer, err := cdc.New(cc)
		if err != nil {
			cancel(nil)
			pub.Close()
			return fmt.Errorf("%w: %w", ErrConfig, err)
		}
		consumer.SetOnLeading(func(leading bool) {
			reached.Store(true)
			if leading {
				n.s.consumer.Store(consumer)
				n.leader.Set(1)
				for _, reason := range n.owed.list() {
					log.Info("publishing a gap an earlier term of this node could not", "reason", reason)
					// Beside the stream goroutine, which must not wait on
					// NATS here; the term owns it (Reset ends with term).
					go n.payReset(ctx, term, pub, consumer, reason, log)
				}
			} else {
				n.s.consumer.CompareAndSwap(consumer, nil)
				n.leader.Set(0)
			}
		})
		err = consumer.Run(term, pub)
		pub.Close()
		cause := context.Cause(term)
		cancel(nil)
		n.s.consumer.CompareAndSwap(consumer, nil)
		n.leader.Set(0)
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil && cdc.IsConfigError(err) && !reached.Load():
			return err // the database is not set up: say so and exit
		case err != nil && cdc.IsConfigError(err):
			log.Warn("cannot stream until this is fixed; trying again", "backoff", wait, "error", err)
		default:
			wait = time.Second
			if cause != nil && !errors.Is(cause, context.Canceled) {
				err = cause
			}
			log.Info("leadership term ended; standing by again", "error", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		if err != nil && cdc.IsConfigError(err) {
			wait = min(2*wait, 30*time.Second)
		}
	}
}

// owe keeps a gap whose publication failed for whichever node leads next:
// recorded in the stream (cdc's RecordGap), it is reported by the next
// leader's consumer in its place, whichever node that is. Only if
// PostgreSQL cannot take the record either does this node owe it itself,
// published by its own next term.
func (n *clusterNode) owe(ctx context.Context, consumer *cdc.Consumer, reason string, cause error, log logger) {
	// Also while the node shuts down: its memory is about to go.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	err := consumer.RecordGap(rctx, reason)
	cancel()
	if err == nil {
		log.Warn("could not publish a gap to the feed; recorded it in the stream for the next leader", "reason", reason, "error", cause)
		return
	}
	n.owed.add(reason)
	log.Warn("could not publish a gap to the feed nor record it in the stream; this node's next term will publish it", "reason", reason, "error", cause, "record_error", err)
}

// payReset publishes a reset this node owes. If that fails (the failure
// ends the term) it tries to record it in the stream for whichever node
// leads next, and owes it still if it cannot.
func (n *clusterNode) payReset(ctx, term context.Context, pub *feed.Publisher, consumer *cdc.Consumer, reason string, log logger) {
	err := pub.Reset(term, reason)
	n.owed.paid(reason)
	if err != nil {
		n.owe(ctx, consumer, reason, err, log)
	}
}

// awaitStream creates or updates the stream, trying again with backoff
// until it answers or ctx ends.
func (n *clusterNode) awaitStream(ctx context.Context, js jetstream.JetStream, log logger) error {
	backoff := 250 * time.Millisecond
	for failed := false; ; failed = true {
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := feed.EnsureStream(sctx, js, n.streamConfig())
		cancel()
		if err == nil {
			if failed {
				log.Info("feed's stream ready again; a candidate for the slot again", "stream", n.cfg.Stream)
			}
			return nil
		}
		if !failed {
			log.Warn("cannot create or update the feed's stream: not a candidate for the slot until it can", "stream", n.cfg.Stream, "error", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

func (n *clusterNode) streamConfig() feed.StreamConfig {
	return feed.StreamConfig{Name: n.cfg.Stream, ReplayWindow: n.s.cfg.ReplayWindow, Replicas: n.cfg.Replicas}
}

// logger is what the leadership loop logs with.
type logger interface {
	Warn(string, ...any)
	Info(string, ...any)
}

// redactURL drops the credentials of each URL of a NATS_URL list, for
// errors and logs.
func redactURL(list string) string {
	parts := strings.Split(list, ",")
	for i, p := range parts {
		if u, err := url.Parse(strings.TrimSpace(p)); err == nil && u.User != nil {
			u.User = url.User("redacted")
			parts[i] = u.String()
		}
	}
	return strings.Join(parts, ",")
}

// deriveGapKey keeps the gap records' key apart from the shared secret's
// other uses (JWTs, recovery pids).
func deriveGapKey(secret []byte) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte("koordi-realtime gap records"))
	return m.Sum(nil)
}

// lockKey is the advisory lock of a slot: every node of the service takes
// the same one, other services on other slots differ.
func lockKey(slot string) int64 {
	h := fnv.New64a()
	h.Write([]byte("koordi-realtime slot leader " + slot))
	return int64(h.Sum64())
}
