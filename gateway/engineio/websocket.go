package engineio

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/url"
	"runtime/debug"
	"time"

	"github.com/coder/websocket"
)

// serveWebSocket runs a WebSocket transport: a fresh session when c is nil,
// otherwise the upgrade of polling session c. Once the session is on the
// WebSocket it hands reading over (startReading) and returns, so the deep
// stack of net/http's connection goroutine is not kept for the life of the
// connection; writers start on demand (claimConsumerLocked).
func (s *Server) serveWebSocket(w http.ResponseWriter, r *http.Request, q url.Values, c *Conn) {
	// ServeHTTP has checked the Origin (originAllowed); Accept's own check
	// would admit any Origin naming the Host, whatever its scheme.
	opts := &websocket.AcceptOptions{InsecureSkipVerify: true}
	if !s.wg.add() {
		writeRefusedSession(w, errShuttingDown)
		return
	}
	defer s.wg.done()
	bw := &batchingWriter{ResponseWriter: w}
	ws, err := websocket.Accept(bw, r, opts)
	if err != nil {
		// Accept has answered the request (403 or 400).
		return
	}
	ws.SetReadLimit(int64(s.cfg.MaxPayload))
	if c != nil {
		c.mu.Lock()
		ok := !c.onWebSocket && c.prober == nil && !c.closed
		c.mu.Unlock()
		if !ok {
			// Like the reference server: accept, then close a second
			// upgrade of the same session.
			_ = ws.CloseNow()
			return
		}
	}

	if c == nil {
		var err error
		if c, err = s.newConn(r, "websocket"); err != nil {
			status := websocket.StatusGoingAway
			if errors.Is(err, errTooManySessions) {
				status = websocket.StatusTryAgainLater
			}
			closeWithin(ws, status, time.Second)
			return
		}
		c.mu.Lock()
		c.ws, c.bc = ws, bw.conn
		// The open packet goes first, through the queue like everything else.
		c.queue.push(Packet{Data: s.openPacket(c.id, false)})
		consumer := c.claimConsumerLocked()
		c.mu.Unlock()
		c.wakeConsumer(consumer)
		s.cfg.Logger.Debug("engine.io session opened", c.LogAttr(), "transport", "websocket", "remote", r.RemoteAddr)
		s.h.Open(c)
	} else if !c.probe(ws, bw.conn) {
		return
	}
	// Only the connection and its reader go on: bw leads to net/http's
	// response and, through it, to the request and net/http's own buffers.
	s.startReading(c, ws, bw.conn, bw.br)
}

// startReading hands the WebSocket's read side to the poller, so an idle
// connection holds no goroutine. Bytes already in the reader (frames a
// client sent right behind the upgrade's "5") are invisible to epoll: a
// goroutine reads them first, then hands over. A connection the poller
// cannot watch (no descriptor, as under TLS, or bytes the client sent behind
// the upgrade request, hidden from us in coder/websocket's reader: br is nil)
// keeps its reader goroutine.
func (s *Server) startReading(c *Conn, ws *websocket.Conn, bc *batchConn, br *bufio.Reader) {
	pollable := br != nil
	if pollable && !c.buffered(br) {
		if pollable = s.watch(c, ws, bc, br); pollable {
			return
		}
	}
	s.wg.goFunc(func() {
		defer c.recoverReader()
		for c.readMessage(ws) {
			if pollable && !c.buffered(br) {
				if pollable = s.watch(c, ws, bc, br); pollable {
					return // readiness now starts readReady; this goroutine reads no more
				}
			}
		}
	})
}

// watch registers the connection with the poller; false if the poller
// cannot watch it (the caller keeps reading with a goroutine).
func (s *Server) watch(c *Conn, ws *websocket.Conn, bc *batchConn, br *bufio.Reader) bool {
	reg, err := s.poll.register(bc.Conn, func(reg *pollReg) { c.readReady(ws, br, reg) })
	if err != nil {
		if !errors.Is(err, errPollUnsupported) {
			s.cfg.Logger.Warn("engine.io: reading with a goroutine per connection", c.LogAttr(), "err", err)
		}
		return false
	}
	c.mu.Lock()
	closed := c.closed
	if !closed {
		c.pollReg = reg
	}
	c.mu.Unlock()
	if closed {
		reg.unregister()
	}
	return true
}

// buffered reports whether br holds bytes not yet read. The closing
// handshake reads from br too: closeMu keeps the two apart.
func (c *Conn) buffered(br *bufio.Reader) bool {
	c.closeMu.Lock()
	defer c.closeMu.Unlock()
	return br.Buffered() > 0
}

// readReady reads what the poller found readable, then re-arms it.
//
// A readiness that brings only a WebSocket control frame (a ping from a
// proxy) leaves this goroutine waiting in ws.Read for the next data
// message, at most about a heartbeat, since the client answers the
// server's pings.
func (c *Conn) readReady(ws *websocket.Conn, br *bufio.Reader, reg *pollReg) {
	defer c.recoverReader()
	for {
		if !c.readMessage(ws) {
			reg.unregister()
			return
		}
		// What the reader buffered is invisible to epoll: read it first.
		if !c.buffered(br) {
			break
		}
	}
	if err := reg.arm(); err != nil {
		// The connection closed underneath, or the session ended meanwhile.
		c.close(ReasonTransportError, false)
		reg.unregister()
	}
}

// recoverReader logs a panic of the Handler on the read path:
// deliverSerialized has closed the connection, and what net/http did for a
// panicking handler is left to do: log it and go on.
func (c *Conn) recoverReader() {
	if p := recover(); p != nil {
		c.srv.cfg.Logger.Error("engine.io handler panicked", c.LogAttr(), "panic", p, "stack", string(debug.Stack()))
	}
}

// probe runs the upgrade handshake on ws for polling session c: "2probe" →
// "3probe", then "5" switches the session to ws. Anything else, or the
// session ending, closes ws and leaves the session on polling.
func (c *Conn) probe(ws *websocket.Conn, bc *batchConn) bool {
	// Close ws if the session ends, or another WebSocket completes the
	// upgrade, while we wait for the client.
	stop := context.AfterFunc(doneContext{c.Done()}, func() { _ = ws.CloseNow() })
	defer stop()
	stopUpgraded := context.AfterFunc(doneContext{c.upgraded}, func() { _ = ws.CloseNow() })
	defer stopUpgraded()
	ctx := context.Background()
	timeout := time.AfterFunc(c.srv.cfg.PingInterval+c.srv.cfg.PingTimeout, func() { _ = ws.CloseNow() })
	defer timeout.Stop()
	for {
		typ, data, err := ws.Read(ctx)
		if err != nil {
			c.endUpgrade(ws)
			_ = ws.CloseNow()
			return false
		}
		if typ != websocket.MessageText {
			break
		}
		switch {
		case bytes.Equal(data, []byte("2probe")):
			c.mu.Lock()
			mine := c.prober == nil && !c.closed && !c.onWebSocket
			if mine {
				c.prober = ws
			}
			c.mu.Unlock()
			if !mine {
				_ = ws.CloseNow()
				return false
			}
			if err := ws.Write(ctx, websocket.MessageText, []byte("3probe")); err != nil {
				c.endUpgrade(ws)
				_ = ws.CloseNow()
				return false
			}
			c.signal() // a waiting GET starts its noop countdown
			continue
		case len(data) == 1 && data[0] == TypeUpgrade:
			c.mu.Lock()
			if c.closed || c.prober != ws {
				c.mu.Unlock()
				break
			}
			c.onWebSocket = true
			c.prober = nil
			c.ws, c.bc = ws, bc
			consumer := c.claimConsumerLocked()
			c.mu.Unlock()
			stopUpgraded() // before announcing: this WebSocket is the one kept
			close(c.upgraded)
			c.wakeConsumer(consumer)
			c.srv.cfg.Logger.Debug("engine.io session upgraded", c.LogAttr())
			return true
		}
		break
	}
	c.endUpgrade(ws)
	_ = ws.Close(websocket.StatusPolicyViolation, "bad upgrade")
	return false
}

// endUpgrade abandons the upgrade that ws was probing, if it was.
func (c *Conn) endUpgrade(ws *websocket.Conn) {
	c.mu.Lock()
	if c.prober == ws {
		c.prober = nil
	}
	c.mu.Unlock()
}

// doneContext adapts a done channel to a context for context.AfterFunc.
type doneContext struct{ done <-chan struct{} }

func (doneContext) Deadline() (time.Time, bool) { return time.Time{}, false }
func (d doneContext) Done() <-chan struct{}     { return d.done }
func (d doneContext) Err() error {
	select {
	case <-d.done:
		return context.Canceled
	default:
		return nil
	}
}
func (doneContext) Value(any) any { return nil }

// readMessage reads and delivers one message; false once the WebSocket has
// failed or the session has closed.
func (c *Conn) readMessage(ws *websocket.Conn) bool {
	typ, data, err := ws.Read(context.Background())
	if err != nil {
		// A clean close from the peer is a transport close; a read failure,
		// including a message over MaxPayload, is an error.
		reason := ReasonTransportError
		switch websocket.CloseStatus(err) {
		case websocket.StatusNormalClosure, websocket.StatusGoingAway, websocket.StatusNoStatusRcvd:
			reason = ReasonTransportClose
		}
		c.close(reason, false)
		return false
	}
	var d Decoded
	if typ == websocket.MessageBinary {
		d = Decoded{Type: TypeMessage, Data: data, Binary: true}
	} else if d, err = DecodePacket(data, false); err != nil {
		c.close(ReasonParseError, false) // the writer sends the close frame
		return false
	}
	return c.deliverSerialized(d)
}

// writeClose ends the write side of a closed session; it runs on the
// write claim, on a goroutine of its own (it may wait on the peer), and
// keeps the claim, so no writer starts again. It delivers what is left
// first when the close asks for it.
func (c *Conn) writeClose(ws *websocket.Conn, bc *batchConn) {
	c.mu.Lock()
	flush, reason := c.flush, c.reason
	batch := c.takeFlushLocked()
	c.mu.Unlock()
	var err error
	if len(*batch) > 0 {
		// Bound the final flush: a dead peer must not hold the writer.
		t := time.AfterFunc(c.srv.cfg.PingTimeout, func() { _ = ws.CloseNow() })
		err = bc.writeFrames(*batch)
		t.Stop()
	}
	putPackets(batch)
	if err != nil {
		_ = ws.CloseNow()
		return
	}
	switch {
	case flush:
		status := websocket.StatusNormalClosure
		if reason == ReasonShutdown {
			status = websocket.StatusGoingAway
		}
		c.closeHandshake(ws, status)
	case reason == ReasonParseError:
		c.closeHandshake(ws, websocket.StatusPolicyViolation)
	default:
		_ = ws.CloseNow()
	}
}

// closeHandshake closes ws with status, waiting up to PingTimeout for the
// peer's answer. The handshake reads from the connection's buffered reader,
// which readReady also looks into: closeMu keeps the two apart.
func (c *Conn) closeHandshake(ws *websocket.Conn, status websocket.StatusCode) {
	c.closeMu.Lock()
	defer c.closeMu.Unlock()
	closeWithin(ws, status, c.srv.cfg.PingTimeout)
}

// closeWithin runs the closing handshake but gives up after d.
func closeWithin(ws *websocket.Conn, status websocket.StatusCode, d time.Duration) {
	t := time.AfterFunc(d, func() { _ = ws.CloseNow() })
	_ = ws.Close(status, "")
	t.Stop()
}
