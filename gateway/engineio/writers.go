package engineio

import (
	"net"
	"sync"
	"time"

	"github.com/coder/websocket"
)

// writerPool writes for every WebSocket connection with packets queued: a
// few goroutines take the ready connections in turn, oldest first, and each
// turn writes what a connection has queued (up to turnBytes) in one write(2).
//
// A goroutine per busy connection made a fan-out to thousands of sockets
// put thousands of goroutines on the run queues, ahead of the one
// publishing the stream: the publisher then handed over about one frame per
// socket between writes, and each write(2) carried two or three frames.
// With one writer, and a few more only while they pay (see push), the
// publisher competes with a few goroutines, not thousands, and keeps its
// share of the CPU, so while the writers are behind, every connection's
// queue grows until its turn comes, and the write carries it all. When
// they keep up, a connection's turn comes at once: nothing waits for a
// batch to form.
type writerPool struct {
	max   int          // writers at most
	eager bool         // start up to max whenever a connection is ready (ConcurrentWrites < 0)
	start func(func()) // runs a writer on a counted goroutine (Server.wg)

	mu      sync.Mutex
	ready   ring // connections waiting for a turn
	running int
	// turnAvg is the packets of recent turns that carried any, an
	// exponential moving average (weight 1/8, samples capped at
	// 4×coalescedTurn) in sixteenths of a packet: whether the writers are
	// coalescing (see push).
	turnAvg int
}

const (
	// extraWriterBacklog is how many connections per running writer must
	// wait for a turn before another starts beside them: a commit to one
	// room of 100 makes 100 ready at once.
	extraWriterBacklog = 64
	// coalescedTurn is the turn size from which writers are taken to be
	// coalescing.
	coalescedTurn = 4
)

// push makes c ready (it holds c's write claim), starting a writer if none
// runs, or another if they are behind without coalescing. A writer beside
// others ends when the turns show coalescing again (run).
//
// A writer behind whose turns carry a frame or two (a socket gets an event
// now and then, so none has more queued) gains nothing by the wait: each
// delivery costs its write(2) either way, and one writer is one core's
// worth of them, where a second core is idle; so another writer starts,
// up to max. A writer behind whose turns carry many frames is coalescing:
// one write(2) for all a socket's frames, which another writer would
// split in two (a catch-up of 100,000 commits to 10,000 sockets took 28%
// more CPU per delivery with two writers than with one), so none starts.
func (p *writerPool) push(c *Conn) {
	p.mu.Lock()
	p.ready.push(c)
	spawn := p.running < p.max && (p.running == 0 || p.eager ||
		p.ready.n >= extraWriterBacklog*p.running && !p.coalescing())
	if spawn {
		p.running++
	}
	p.mu.Unlock()
	if spawn {
		p.start(p.run)
	}
}

// coalescing says whether recent turns carried many packets each, in which
// case no writer runs beside another (see push). Under mu.
func (p *writerPool) coalescing() bool { return !p.eager && p.turnAvg >= coalescedTurn*16 }

// noteTurn adds a turn of packets to turnAvg. Under mu.
func (p *writerPool) noteTurn(packets int) {
	// Turns that carried nothing (a closed or emptied connection) say
	// nothing about coalescing; one huge turn (a polling answer, a full
	// queue) must not hold the average up for dozens of turns.
	if packets > 0 {
		p.turnAvg += (min(packets, 4*coalescedTurn)*16 - p.turnAvg) / 8
	}
}

// run gives turns until no connection is ready, or until it is not the only
// writer and turns coalesce. Writers end rather than wait, so an idle
// server keeps none.
func (p *writerPool) run() {
	var again *Conn
	packets := 0
	for {
		p.mu.Lock()
		p.noteTurn(packets)
		if again != nil {
			// Behind the connections that became ready during its turn.
			p.ready.push(again)
		}
		var c *Conn
		if !p.coalescing() || p.running == 1 {
			c = p.ready.pop()
		}
		if c == nil {
			// Nothing ready, or a writer beside others that coalesce:
			// the others take the turns (see push).
			p.running--
			p.mu.Unlock()
			return
		}
		p.mu.Unlock()
		again = nil
		var more bool
		if more, packets = c.writeTurn(); more {
			again = c
		}
	}
}

// ring is a FIFO of connections that reuses its slots.
type ring struct {
	buf  []*Conn
	head int
	n    int
}

func (r *ring) push(c *Conn) {
	if r.n == len(r.buf) {
		grown := make([]*Conn, max(2*len(r.buf), 64))
		k := copy(grown, r.buf[r.head:])
		copy(grown[k:], r.buf[:r.head])
		r.buf, r.head = grown, 0
	}
	r.buf[(r.head+r.n)%len(r.buf)] = c
	r.n++
}

func (r *ring) pop() *Conn {
	if r.n == 0 {
		return nil
	}
	c := r.buf[r.head]
	r.buf[r.head] = nil
	r.head = (r.head + 1) % len(r.buf)
	r.n--
	return c
}

// turnBytes bounds the packets one turn frames: the pool's writer copies
// them into one buffer before its write(2), and a connection with a large
// queue must not keep it from the others while it does. The rest waits for
// the connection's next turn.
const turnBytes = 256 << 10

// writeTurn writes what c has queued without waiting for its client, and
// reports whether c is to have another turn (it holds the write claim
// still) and how many packets this one took. A client whose socket buffer
// is full gets the rest written by a goroutine of its own, which may wait
// for it: a writer of the pool never waits for one client while the others
// have frames.
func (c *Conn) writeTurn() (again bool, packets int) {
	c.mu.Lock()
	ws, bc := c.ws, c.bc
	if c.closed {
		c.mu.Unlock()
		// Closing may wait on the peer (the final flush, the closing
		// handshake).
		c.srv.wg.goFunc(func() { c.writeClose(ws, bc) })
		return false, 0
	}
	if c.queue.len() == 0 {
		c.writing = false
		c.mu.Unlock()
		return false, 0
	}
	batch := c.takeLocked(turnBytes)
	c.mu.Unlock()
	packets = len(*batch)

	bufp := frameBatch(*batch)
	putPackets(batch)
	if !bc.mu.TryLock() {
		// coder/websocket is writing a control frame, perhaps to a client
		// that stopped reading: the batch waits for it aside.
		c.srv.wg.goFunc(func() {
			bc.mu.Lock()
			c.writeRest(ws, bc, bufp, 0)
		})
		return false, packets
	}
	n, err := bc.writeNowLocked(*bufp)
	if err == nil && n < len(*bufp) {
		c.srv.wg.goFunc(func() { c.writeRest(ws, bc, bufp, n) })
		return false, packets
	}
	peerClosed := bc.closeSent
	bc.mu.Unlock()
	putFrameBuffer(bufp)
	if err != nil {
		c.writeFailed(ws, peerClosed)
		return false, packets
	}
	return c.keepWriting(), packets
}

// writeRest writes the frames of bufp from byte n on, waiting for the
// client as long as it takes, then gives c back to the pool if it has more.
// The caller holds bc.mu, which writeRest releases: held from the first
// byte of a batch to its last, it keeps coder/websocket's control frames
// out of the data frames.
func (c *Conn) writeRest(ws *websocket.Conn, bc *batchConn, bufp *[]byte, n int) {
	var err error
	peerClosed := bc.closeSent
	if peerClosed || bc.closing.Load() {
		err = net.ErrClosed
	} else {
		// A client that stops reading (and answers pings, so the heartbeat
		// keeps it) must not hold this goroutine and its batch for ever:
		// as long as a heartbeat round, as polling allows a response, or
		// once the connection is closing, as long as its final flush.
		c.mu.Lock()
		wait := c.srv.cfg.PingInterval + c.srv.cfg.PingTimeout
		if c.closed {
			wait = c.srv.cfg.PingTimeout
		}
		_ = bc.Conn.SetWriteDeadline(time.Now().Add(wait))
		c.mu.Unlock()
		_, err = bc.Conn.Write((*bufp)[n:])
		_ = bc.Conn.SetWriteDeadline(time.Time{})
	}
	bc.mu.Unlock()
	putFrameBuffer(bufp)
	if err != nil {
		c.writeFailed(ws, peerClosed)
		return
	}
	if c.keepWriting() {
		c.srv.writers.push(c)
	}
}

// keepWriting reports whether c has more to write (or a close to carry out)
// and, if not, gives its write claim back.
func (c *Conn) keepWriting() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.queue.len() > 0 || c.closed {
		return true
	}
	c.writing = false
	return false
}

// writeFailed ends a connection whose write failed. The claim is kept, so
// no writer starts again. A write refused because the peer's close was
// already answered (closeSent) is the peer closing, as the reader would
// report it a moment later.
func (c *Conn) writeFailed(ws *websocket.Conn, peerClosed bool) {
	reason := ReasonTransportError
	if peerClosed {
		reason = ReasonTransportClose
	}
	c.close(reason, false)
	c.srv.wg.goFunc(func() { _ = ws.CloseNow() })
}
