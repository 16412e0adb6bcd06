package engineio

import (
	"errors"
	"io"
	"net/http"
	"time"
)

// upgradeNoopDelay is how long a GET waits for packets during an upgrade
// before it is answered with a noop.
const upgradeNoopDelay = 100 * time.Millisecond

// servePoll answers a long-polling GET with what is queued, waiting until
// something is. Only one GET may wait at a time: a second one closes the
// session (the reference server does the same).
func (c *Conn) servePoll(w http.ResponseWriter, r *http.Request) {
	c.mu.Lock()
	if c.onWebSocket {
		c.mu.Unlock()
		writeError(w, errBadRequest)
		return
	}
	if c.closed {
		// A lingering session (see close): answer once, with what the
		// close was to deliver, then the close.
		batch := c.takeFlushLocked()
		ps := append(*batch, Packet{Data: []byte{c.closeFrame}})
		c.mu.Unlock()
		c.srv.remove(c)
		body := AppendPayload(make([]byte, 0, payloadLen(ps)), ps)
		*batch = ps
		putPackets(batch)
		c.writePollAnswer(w, body)
		return
	}
	if c.getPending {
		c.mu.Unlock()
		c.close(ReasonTransportError, false)
		writeError(w, errBadRequest)
		return
	}
	c.getPending = true
	done := c.doneLocked()
	var noop <-chan time.Time // fires while upgrading: release the GET with a noop
	for c.queue.len() == 0 && !c.closed && !c.onWebSocket {
		if c.prober != nil && noop == nil {
			// Like the reference server's 100 ms upgrade check: the noop
			// lets the client pause polling and complete the upgrade.
			t := time.NewTimer(upgradeNoopDelay)
			defer t.Stop()
			noop = t.C
		}
		c.mu.Unlock()
		select {
		case <-c.wake:
		case <-noop:
			c.mu.Lock()
			goto answer
		case <-done:
		case <-r.Context().Done():
			c.mu.Lock()
			c.getPending = false
			c.mu.Unlock()
			// The reference server treats an aborted poll as a transport error.
			c.close(ReasonTransportError, false)
			return
		}
		c.mu.Lock()
	}
answer:
	var batch *[]Packet
	var tail []byte
	switch {
	case c.onWebSocket:
		// Upgraded while we waited (a client pauses polling before it
		// upgrades, so this one broke the protocol): the WebSocket writer
		// owns the queue now.
		c.getPending = false
		c.mu.Unlock()
		writeError(w, errBadRequest)
		return
	case c.closed:
		batch = c.takeFlushLocked()
		tail = []byte{c.closeFrame}
	case c.queue.len() > 0:
		batch = c.takeLocked(-1)
	default: // upgrading: release the GET so the client can pause polling
		batch = getPackets()
		tail = noopPacket
	}
	c.getPending = false
	c.mu.Unlock()

	ps := *batch
	if tail != nil {
		ps = append(ps, Packet{Data: tail})
	}
	body := AppendPayload(make([]byte, 0, payloadLen(ps)), ps)
	*batch = ps
	putPackets(batch)
	c.writePollAnswer(w, body)
}

// writePollAnswer writes a GET's answer within PingInterval+PingTimeout,
// the time a session whose client is silent lives: a client that does not
// read (a large queue fills the socket buffers) would otherwise hold the
// request's goroutine and connection for good, as nothing else aborts a
// polling write. The deadline is set only now, after the long wait, and
// net/http clears it when the request ends.
func (c *Conn) writePollAnswer(w http.ResponseWriter, body []byte) {
	_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(c.srv.cfg.PingInterval + c.srv.cfg.PingTimeout))
	writePayload(w, body)
}

// servePost reads a polling payload and delivers its packets in order.
func (c *Conn) servePost(w http.ResponseWriter, r *http.Request) {
	c.mu.Lock()
	if c.onWebSocket || c.closed {
		c.mu.Unlock()
		writeError(w, errBadRequest)
		return
	}
	if c.postPending {
		c.mu.Unlock()
		c.close(ReasonTransportError, false)
		writeError(w, errBadRequest)
		return
	}
	c.postPending = true
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.postPending = false
		c.mu.Unlock()
	}()

	limit := c.srv.cfg.MaxPayload
	if r.ContentLength > int64(limit) {
		c.close(ReasonTransportError, false)
		w.Header().Set("Connection", "close") // the body is not read
		http.Error(w, "payload too large", http.StatusRequestEntityTooLarge)
		return
	}
	// The body is read within PingTimeout and up to MaxPayload: a client
	// trickling it would otherwise hold the request, and the connection,
	// for as long as it trickles, well past its session's end. net/http
	// lifts the deadline once the body is read to its end (its read behind
	// the handler starts without one) and sets its own for the next request.
	_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(c.srv.cfg.PingTimeout))
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, int64(limit)))
	if err != nil {
		c.close(ReasonTransportError, false)
		// What is left of the body must not be read as the next request.
		w.Header().Set("Connection", "close")
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			http.Error(w, "payload too large", http.StatusRequestEntityTooLarge)
			return
		}
		writeError(w, errBadRequest)
		return
	}
	if err := forEachPacket(body, c.deliverSerialized); err != nil {
		c.close(ReasonParseError, false)
		writeError(w, errBadRequest)
		return
	}
	w.Header().Set("Content-Type", "text/html")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write([]byte("ok"))
}
