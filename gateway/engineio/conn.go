package engineio

import (
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// Conn is one Engine.IO session. Its methods are safe for concurrent use.
type Conn struct {
	srv *Server
	id  string
	req sessionRequest

	value atomic.Value // handler-owned slot

	readMu  sync.Mutex // serialises Handler.Message, Handler.Close and Dispatch
	closeMu sync.Mutex // the WebSocket closing handshake vs. readReady's look into the read buffer

	wake     chan struct{} // polling sessions only, capacity 1: the queue grew or the state changed
	done     chan struct{} // closed by close; made on demand (doneLocked), under mu
	upgraded chan struct{} // closed when the upgrade to WebSocket completes

	mu          sync.Mutex
	queue       sendQueue // waiting for the wire
	closed      bool
	onWebSocket bool // the transport: WebSocket, else polling
	reason      string
	flush       bool // deliver what is queued before closing
	closeFrame  byte // polling: what a pending GET answers on close (TypeClose, or TypeNoop when the peer closed)
	getPending  bool
	postPending bool
	prober      *websocket.Conn // the WebSocket probing an upgrade, if any
	ws          *websocket.Conn // the WebSocket transport once upgraded or opened on it
	bc          *batchConn      // ws's connection
	pollReg     *pollReg        // ws's read side, when the poller watches it
	writing     bool            // a writer owns ws's write side: c is in the writer pool, or a goroutine writes or closes it
	drained     chan struct{}   // signalled (capacity 1) when the consumer takes the queue; made by Drained

	// heartbeat, under mu
	timer        *time.Timer
	timerAt      time.Time // when the timer is due: next ping, or pong deadline
	lastPing     time.Time // when the last ping was due
	awaitingPong bool
}

// ID returns the session id.
func (c *Conn) ID() string { return c.id }

// Request returns the opening request (headers, query, remote address,
// time), less the header fields of the HTTP exchange and the WebSocket
// handshake. Each call returns new maps.
func (c *Conn) Request() Request { return c.req.request() }

// Transport returns the current transport, "polling" or "websocket".
func (c *Conn) Transport() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.onWebSocket {
		return "websocket"
	}
	return "polling"
}

// SetValue stores handler-owned data on the connection.
func (c *Conn) SetValue(v any) { c.value.Store(&v) }

// Value returns what SetValue stored, or nil.
func (c *Conn) Value() any {
	if p, ok := c.value.Load().(*any); ok {
		return *p
	}
	return nil
}

// Done is closed when the connection has closed.
func (c *Conn) Done() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.doneLocked()
}

// doneLocked is Done's channel, made at the first call: a held WebSocket
// connection that nobody waits on keeps none. The caller holds mu.
func (c *Conn) doneLocked() chan struct{} {
	if c.done == nil {
		if c.closed {
			c.done = closedChan
		} else {
			c.done = make(chan struct{})
		}
	}
	return c.done
}

// closedChan is the done channel of a connection that closed before anyone
// asked for one.
var closedChan = func() chan struct{} {
	ch := make(chan struct{})
	close(ch)
	return ch
}()

// SendText queues one text packet (type byte then data, e.g. "4hello").
// It never blocks; false if the connection is closed or its queue was full,
// in which case the connection is closed with ReasonSlowConsumer.
// p must not be modified afterwards.
func (c *Conn) SendText(p []byte) bool {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return false
	}
	if c.queue.len() >= c.srv.cfg.SendQueue {
		c.mu.Unlock()
		c.close(ReasonSlowConsumer, false)
		return false
	}
	c.queue.push(Packet{Data: p})
	w := c.claimConsumerLocked()
	c.mu.Unlock()
	c.wakeConsumer(w)
	return true
}

// OfferFrames queues the packets refs name in sets, in order, as far as
// the queue has room, and reports how many it queued: a prefix of refs.
// Unlike SendText it never closes the connection: a sender that can catch
// up on its own (the gateway replays from its window) uses it and waits for
// Drained instead. Nothing is queued once the connection is closed. A
// fan-out makes each set once and queues it to every recipient by index,
// taking each connection's lock once for all of its packets.
func (c *Conn) OfferFrames(sets []*Frames, refs []FrameRef) int {
	c.mu.Lock()
	n := min(len(refs), c.srv.cfg.SendQueue-c.queue.len())
	if c.closed || n <= 0 {
		c.mu.Unlock()
		return 0
	}
	c.queue.pushFrom(sets, refs[:n])
	w := c.claimConsumerLocked()
	c.mu.Unlock()
	c.wakeConsumer(w)
	return n
}

// Queued reports how many packets wait for the wire.
func (c *Conn) Queued() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.queue.len()
}

// Drained returns a channel that receives (capacity 1, never closed) each
// time the transport takes the queue for the wire. Take it before looking at
// Queued, so that a drain in between is not missed.
func (c *Conn) Drained() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.drained == nil {
		c.drained = make(chan struct{}, 1)
	}
	return c.drained
}

// SendPackets queues ps atomically: nothing else is queued between them
// (a Socket.IO binary packet and its attachments). Same contract as SendText.
func (c *Conn) SendPackets(ps ...Packet) bool {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return false
	}
	if c.queue.len()+len(ps) > c.srv.cfg.SendQueue {
		c.mu.Unlock()
		c.close(ReasonSlowConsumer, false)
		return false
	}
	c.queue.push(ps...)
	w := c.claimConsumerLocked()
	c.mu.Unlock()
	c.wakeConsumer(w)
	return true
}

// Close closes the connection with ReasonForcedClose after delivering what
// is already queued (bounded by the heartbeat timeout).
func (c *Conn) Close() { c.close(ReasonForcedClose, true) }

// Dispatch runs f on a new goroutine owned by the Server, serialised with the
// Handler's Message and Close calls for this connection (it waits for a
// Message in progress). It is how work started outside the read path joins
// the connection's order of calls.
func (c *Conn) Dispatch(f func()) {
	c.srv.wg.goFunc(func() {
		c.readMu.Lock()
		defer c.readMu.Unlock()
		f()
	})
}

// signal tells the queue's consumer that the queue grew or the state
// changed.
func (c *Conn) signal() {
	c.mu.Lock()
	w := c.claimConsumerLocked()
	c.mu.Unlock()
	c.wakeConsumer(w)
}

// consumerWake says how to reach the queue's consumer after a change.
type consumerWake struct {
	write   bool // give the connection to the writer pool
	polling bool // wake a polling GET (or a probe waiting on one)
}

// claimConsumerLocked decides, under mu, who consumes the change just made.
// On WebSocket a connection is with the writer pool only while there is
// something to write: an idle connection keeps no writer, which is most of
// the memory a held connection would otherwise cost. Claiming under mu means
// exactly one writer has the connection at a time, and none is missed: a
// writer gives up its claim under mu only after finding the queue empty.
func (c *Conn) claimConsumerLocked() consumerWake {
	// A GET may still wait after an upgrade (a client that broke the
	// protocol): it is woken to answer and end.
	w := consumerWake{polling: c.ws == nil || c.getPending}
	if c.ws == nil || c.writing || (c.queue.len() == 0 && !c.closed) {
		return w
	}
	c.writing = true
	w.write = true
	return w
}

func (c *Conn) wakeConsumer(w consumerWake) {
	if w.write {
		c.srv.writers.push(c)
	}
	if w.polling {
		select {
		case c.wake <- struct{}{}:
		default:
		}
	}
}

func (c *Conn) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

// close ends the session once: it leaves the table, stops the heartbeat,
// wakes the consumer (which delivers the queue first when flush is set) and
// schedules Handler.Close after any Message in progress.
func (c *Conn) close(reason string, flush bool) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	c.reason = reason
	c.flush = flush
	if c.closeFrame == 0 {
		c.closeFrame = TypeClose
	}
	if c.timer != nil {
		c.timer.Stop()
	}
	ws, reg := c.ws, c.pollReg
	if flush && c.bc != nil {
		// A batch may be on its way to a client that reads nothing (see
		// writeRest): the flush that ends the connection waits for it only
		// as long as writeClose waits for its own.
		_ = c.bc.Conn.SetWriteDeadline(time.Now().Add(c.srv.cfg.PingTimeout))
	}
	done := c.done
	if done == nil {
		c.done = closedChan // nobody waits yet; later callers find it closed
	}
	consumer := c.claimConsumerLocked()
	// With no GET waiting, linger briefly for the next one, instead of
	// answering it "Session ID unknown": a peer that closed may still have a
	// GET in flight, which gets its noop; a close that delivers what is
	// queued (Close, Shutdown) gives it the queue and the close packet.
	linger := !c.onWebSocket && !c.getPending && (c.closeFrame == TypeNoop || flush)
	c.mu.Unlock()
	if done != nil {
		close(done)
	}
	if reg != nil {
		reg.unregister()
	}
	if linger {
		time.AfterFunc(c.srv.cfg.PingTimeout, func() { c.srv.remove(c) })
	} else {
		c.srv.remove(c)
	}
	if ws != nil && !flush && reason != ReasonParseError {
		// Abort a write that may be stuck on a dead peer; the writer and the
		// reader then both fail and exit. CloseNow waits for them to let go
		// of the connection, so it runs aside: close may be called from Send.
		c.srv.wg.goFunc(func() { _ = ws.CloseNow() })
	}
	c.wakeConsumer(consumer)
	c.srv.cfg.Logger.Debug("engine.io session closed", c.LogAttr(), "reason", reason)
	c.srv.wg.goFunc(func() {
		c.readMu.Lock()
		defer c.readMu.Unlock()
		c.srv.h.Close(c, reason)
	})
}

// takeLocked takes packets from the head of the queue for the wire, at
// least one and then as long as their data stays within limit, or all of
// them when limit < 0. The caller holds mu and gives the slice back with
// putPackets once it has framed or encoded them.
func (c *Conn) takeLocked(limit int) *[]Packet {
	batch := getPackets()
	if c.queue.len() == 0 {
		return batch
	}
	*batch = c.queue.take(*batch, limit)
	if c.drained != nil {
		select {
		case c.drained <- struct{}{}:
		default:
		}
	}
	return batch
}

// takeFlushLocked takes what a closed connection is to deliver: the whole
// queue if the close asked for a flush, else nothing.
func (c *Conn) takeFlushLocked() *[]Packet {
	if !c.flush {
		return getPackets()
	}
	return c.takeLocked(-1)
}

// startHeartbeat arms the ping timer: ping every PingInterval, close when
// the pong has not come PingTimeout after a ping.
//
// Deadlines follow the schedule, not the moment a timer callback happened
// to run: the pong is due PingTimeout after the ping was due (but never
// sooner than PingTimeout/2 after it was actually sent), and the next ping
// is due PingInterval after the previous one, whatever the round trip took.
// A loaded process thus neither stretches the heartbeat nor lets a session
// outlive its timeout.
//
// The first ping comes at a random point of PingInterval (firstPingDelay),
// in a slot shared with other connections (pingSlot), the next ones
// PingInterval apart.
func (c *Conn) startHeartbeat() {
	c.mu.Lock()
	defer c.mu.Unlock()
	at := pingSlot(time.Now().Add(firstPingDelay(c.srv.cfg.PingInterval)), c.srv.cfg.PingInterval)
	c.timerAt = at
	c.timer = time.AfterFunc(time.Until(at), c.onTimer)
}

// pingSlot rounds a first ping's time down to a slot of a hundredth of the
// interval (at most 100 ms) on the wall clock, which every connection
// shares: the pings of a slot then fire, go out and come back together,
// and the few dozen of them share the timer, poller and writer wake-ups
// that one ping at a time pays alone, while no slot is a burst of
// thousands. The next pings stay an interval apart, in the same slots. It
// moves t back rather than Truncate it, which would drop t's monotonic
// reading: the heartbeat's deadlines would then follow the wall clock, and
// a clock stepped back would make onTimer take the ping for an early
// firing and never ping again.
func pingSlot(t time.Time, interval time.Duration) time.Time {
	slot := min(interval/100, 100*time.Millisecond)
	if slot <= 0 {
		return t
	}
	return t.Add(-time.Duration(t.UnixNano() % int64(slot)))
}

// firstPingDelay spreads connections' first pings evenly over the interval,
// after its first second (or half, if shorter): a ping in the middle of the
// upgrade from polling would be harmless to a client but breaks the
// public test suites' exact sequences.
// Connections opened together (a deploy, a wave of reconnects after one, a
// benchmark's clients) would otherwise be pinged together for as long as
// they live: at 10,000 of them, a burst of timer callbacks, pings and pongs
// every PingInterval, which on two cores near their limit made every
// delivery of the next 1–1.7 s up to 100–200 ms late (RESULTS.md,
// 2026-12-03). Spread over only the interval's second half, the first
// pings came twice as fast as later ones, and that was enough to cost a
// step of the latency sweep its p99. A ping before PingInterval is within
// the protocol: a client only wants one within PingInterval+PingTimeout of
// the last.
func firstPingDelay(interval time.Duration) time.Duration {
	floor := min(interval/2, time.Second)
	return floor + time.Duration(rand.Int64N(int64(interval-floor)+1))
}

// setTimerLocked makes the timer fire at t (at once if t has passed).
func (c *Conn) setTimerLocked(t time.Time) {
	c.timerAt = t
	c.timer.Reset(max(time.Until(t), 0))
}

func (c *Conn) onTimer() {
	c.mu.Lock()
	now := time.Now()
	if c.closed || now.Before(c.timerAt) {
		// Closed, or a firing that raced with a Reset: the Reset fires later.
		c.mu.Unlock()
		return
	}
	if c.awaitingPong {
		c.mu.Unlock()
		c.close(ReasonPingTimeout, false)
		return
	}
	c.awaitingPong = true
	c.lastPing = c.timerAt // when this ping was due
	deadline := c.lastPing.Add(c.srv.cfg.PingTimeout)
	if soonest := now.Add(c.srv.cfg.PingTimeout / 2); deadline.Before(soonest) {
		deadline = soonest
	}
	c.setTimerLocked(deadline)
	c.mu.Unlock()
	c.SendText(pingPacket)
}

func (c *Conn) onPong() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || !c.awaitingPong {
		return
	}
	c.awaitingPong = false
	c.setTimerLocked(c.lastPing.Add(c.srv.cfg.PingInterval))
}

// pongOverdue reports whether the pong deadline has passed; a request that
// finds it so closes the session at once rather than racing the timer.
func (c *Conn) pongOverdue() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.awaitingPong && !c.closed && !time.Now().Before(c.timerAt)
}

var (
	pingPacket = []byte{TypePing}
	noopPacket = []byte{TypeNoop}
)

// deliverSerialized is deliver under readMu. A panicking Handler still
// releases the lock and closes the connection (so its writer and callbacks
// end) before the panic goes on to the caller: net/http for polling, the
// WebSocket reader otherwise, which log it.
func (c *Conn) deliverSerialized(d Decoded) bool {
	c.readMu.Lock()
	defer func() {
		c.readMu.Unlock()
		if p := recover(); p != nil {
			c.close(ReasonTransportError, false)
			panic(p)
		}
	}()
	return c.deliver(d)
}

// maxPingData bounds the data of a client's ping, which its pong repeats.
const maxPingData = 64

// deliver handles one decoded packet from the peer; false when the
// connection must stop reading. The caller holds readMu.
func (c *Conn) deliver(d Decoded) bool {
	switch d.Type {
	case TypeMessage:
		if c.isClosed() {
			return false
		}
		c.srv.h.Message(c, d.Data, d.Binary)
	case TypePong:
		c.onPong()
	case TypePing:
		// Engine.IO v4 clients ping only to probe an upgrade ("2probe",
		// answered on the upgrading transport); answer any other ping as
		// the reference server does, but a pong repeats the ping's data,
		// and a queue bounded in packets would hold a megabyte a pong for
		// a client that sends large pings and never reads: a ping longer
		// than any probe is abuse.
		if len(d.Data) > maxPingData {
			c.close(ReasonParseError, false)
			return false
		}
		c.SendText(append([]byte{TypePong}, d.Data...))
	case TypeClose:
		c.mu.Lock()
		c.closeFrame = TypeNoop
		c.mu.Unlock()
		c.close(ReasonTransportClose, false)
		return false
	case TypeNoop:
	default: // open, or upgrade outside an upgrade
		c.close(ReasonParseError, false)
		return false
	}
	return true
}

// Abort closes the connection at once with reason, dropping what is queued.
func (c *Conn) Abort(reason string) { c.close(reason, false) }
