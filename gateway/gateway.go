package gateway

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
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

	// Memberships answers which calendars a user may listen to. Required.
	Memberships Memberships
	// MembershipTimeout bounds one Memberships call. Default 5s.
	MembershipTimeout time.Duration

	// ReplayWindow is how long published events stay available to
	// reconnecting clients. 0 (or negative) turns replay off, as it makes
	// cdc confirm every transaction on hand-off: one meaning for both sides.
	// serve's REPLAY_WINDOW defaults to 2m.
	ReplayWindow time.Duration
	// ReplayMaxEvents bounds the window's length. Default 100,000.
	ReplayMaxEvents int
	// ReplayMaxBytes bounds the window's memory. Default 64 MiB.
	ReplayMaxBytes int

	// RateLimit is the number of client events a socket may emit per minute
	// (a token bucket of that size refilled over a minute); 0 (or negative)
	// sets no limit. serve's RATE_LIMIT defaults to 100.
	RateLimit int
	// AbuseLimit is how many refused events within a minute disconnect the
	// socket (a server DISCONNECT, which stops the client's reconnection).
	// Default: RateLimit.
	AbuseLimit int

	// Registerer receives the koordi_gateway_* metrics; nil registers none.
	Registerer prometheus.Registerer
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

func (c *Config) setDefaults() {
	if c.MembershipTimeout <= 0 {
		c.MembershipTimeout = 5 * time.Second
	}
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
	// maxReplay bounds one recovery's replay: a replay longer than the
	// socket's queue would close it as a slow consumer before it could
	// drain, on every attempt. Beyond it the client is told to refetch.
	maxReplay int
	server    *socketio.Server
	metrics   *metrics

	// ctx ends at Shutdown; it bounds Memberships calls.
	ctx    context.Context
	cancel context.CancelFunc

	pubMu  sync.Mutex // see the lock order in doc.go
	idx    *index
	window *window
	closed atomic.Bool
}

// New validates cfg and builds a Gateway.
func New(cfg Config) (*Gateway, error) {
	cfg.setDefaults()
	if cfg.Memberships == nil {
		return nil, errors.New("gateway: Config.Memberships is required")
	}
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
	g.maxReplay = g.server.Config().SendQueue / 2
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

// Publish delivers a committed transaction: its room moves are applied and
// its events published in the transaction's order (each move before the
// event at its position), so a member added receives member:added and
// every later event of the calendar, a member removed nothing after the
// removal, and a deleted calendar's room closes after calendar:deleted.
// Each event is recorded in the replay window, encoded once, and queued to
// every socket of its room. Events whose offset is not after the newest
// published one are dropped as duplicates (the stream re-sends what it had
// already handed over after a replication reconnect), and so are the moves
// of such a transaction, which were applied the first time. Calls are
// serialised; Publish never blocks on a socket.
func (g *Gateway) Publish(ctx context.Context, tx schema.Transaction) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	g.pubMu.Lock()
	defer g.pubMu.Unlock()
	now := g.cfg.Now()
	first := schema.Offset{LSN: tx.CommitLSN}
	if len(tx.Events) > 0 {
		first = tx.Events[0].Offset
	}
	moves := tx.Moves
	if !g.window.accepts(first) {
		moves = nil
	}
	fresh := 0
	for i := range tx.Events {
		for len(moves) > 0 && moves[0].At <= i {
			g.applyMove(&moves[0])
			moves = moves[1:]
		}
		ev := &tx.Events[i]
		if !g.window.accepts(ev.Offset) {
			g.metrics.droppedDup.Inc()
			continue
		}
		fresh++
		f := encodeEnvelope(ev)
		// Aged by this process's clock from publication, not by the
		// database's commit time: a skewed database clock, or a backlog
		// older than the window (catching up after an outage), would
		// otherwise evict events as they are published.
		g.window.add(entry{off: ev.Offset, room: ev.Room, frame: f, at: now})
		g.idx.mu.RLock()
		sent := g.fanOut(ev.Room, f)
		g.idx.mu.RUnlock()
		g.metrics.messagesSent.Add(float64(sent))
	}
	for i := range moves {
		g.applyMove(&moves[i])
	}
	g.window.evict(now)
	if fresh > 0 && tx.CommitTime.After(g.started) {
		// Read again: the histogram promises "queued to every member socket".
		g.metrics.latency.Observe(g.cfg.Now().Sub(tx.CommitTime).Seconds())
	}
	return nil
}

// applyMove changes room membership as a transaction's move says, for every
// socket, connecting ones included (see index.join). The caller holds pubMu.
func (g *Gateway) applyMove(m *schema.Move) {
	g.idx.mu.Lock()
	defer g.idx.mu.Unlock()
	switch m.Op {
	case schema.MoveJoin:
		g.idx.forUser(m.User, func(c *client) { g.idx.join(c, m.Room) })
	case schema.MoveLeave:
		g.idx.forUser(m.User, func(c *client) { g.idx.leave(c, m.Room) })
	case schema.MoveClose:
		g.idx.closeRoom(m.Room)
	}
}

// fanOut queues f to every member of room r and returns how many took it.
// The caller holds idx.mu (read). Nothing here allocates per recipient.
func (g *Gateway) fanOut(r string, f socketio.Frame) int {
	rm := g.idx.rooms[r]
	if rm == nil {
		return 0
	}
	sent := 0
	for _, c := range rm.members {
		if c.conn.Send(f) {
			sent++
		} else {
			g.notQueued(c)
		}
	}
	return sent
}

// notQueued counts a frame a socket did not take: its queue was full (the
// protocol layer then closes it, and Disconnected counts the slow consumer)
// or it is closing. Either way it recovers by replay.
func (g *Gateway) notQueued(*client) {
	g.metrics.droppedClosed.Inc()
}

// encodeEnvelope builds an event's frame: [event, payload, offset].
func encodeEnvelope(ev *schema.Envelope) socketio.Frame {
	data := ev.Data
	if len(data) == 0 {
		data = json.RawMessage("null")
	}
	off := make([]byte, 0, 23)
	off = append(off, '"')
	off = ev.Offset.AppendText(off)
	off = append(off, '"')
	return socketio.EncodeEvent(Namespace, ev.Event, data, off)
}

// Reset tells every connected socket that changes may have been lost (the
// replication slot was recreated): it sends sync:reset {reason} and empties
// the replay window, so sessions from before the gap — also one that had
// received every event before it, and one from a previous process when the
// gap is found at start, before anything was published — connect fresh and
// get sync:reset too, instead of recovering. The event's offset argument is
// the position after the gap, so a client told once is not told again.
func (g *Gateway) Reset(reason string) {
	g.pubMu.Lock()
	defer g.pubMu.Unlock()
	g.window.reset()
	f := resetFrame(reason, g.window.position())
	g.idx.mu.RLock()
	defer g.idx.mu.RUnlock()
	for _, u := range g.idx.users {
		for _, c := range u {
			if c.live && !c.conn.Send(f) {
				g.notQueued(c)
			}
		}
	}
	if len(g.idx.users) > 0 {
		g.log.Warn("sent sync:reset to every socket", "reason", reason)
	} else {
		// At a first start (a slot created) nobody is connected yet; the
		// sessions of an earlier process are told when they come back.
		g.log.Info("stream has a gap: sessions from before it will be told to refetch", "reason", reason)
	}
}

// resetFrame carries, like every event, an offset as its last argument: the
// position after the gap. socket.io-client records it, so a client that got
// sync:reset recovers normally on its next reconnect instead of being told
// again.
func resetFrame(reason string, at schema.Offset) socketio.Frame {
	payload, _ := json.Marshal(schema.Reset{Reason: reason})
	offset, _ := json.Marshal(at.String())
	return socketio.EncodeEvent(Namespace, schema.SyncReset, payload, offset)
}

// Sockets reports the number of sockets registered (connected or connecting).
func (g *Gateway) Sockets() int {
	g.idx.mu.RLock()
	defer g.idx.mu.RUnlock()
	return g.idx.sockets
}

// Shutdown closes every socket at the transport level, a reason clients
// reconnect on (to this process's successor). It is idempotent.
func (g *Gateway) Shutdown(ctx context.Context) error {
	if g.closed.CompareAndSwap(false, true) {
		g.cancel()
	}
	if err := g.server.Shutdown(ctx); err != nil {
		return fmt.Errorf("gateway shutdown: %w", err)
	}
	return nil
}
