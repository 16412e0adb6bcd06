package gateway

import (
	"slices"
	"strings"

	"github.com/koordi/koordi-realtime/gateway/engineio"
	"github.com/koordi/koordi-realtime/gateway/socketio"
	"github.com/koordi/koordi-realtime/schema"
)

// Catching up
//
// Every socket has one ordered path: its cursor (client.sent) is the newest
// event offset queued to it, and nothing at or before it is queued again. A
// socket whose queue keeps up is live: fan-out queues it every event of its
// rooms as it is published (a batch's frames in one go, see pending). One
// that has fallen behind — a slow client whose queue filled
// up, or one that just connected and has a replay to get (a recovery, or
// what was published between its CONNECT and now) — catches up from the
// window instead, at the pace its writer drains: a chunk up to half its
// queue, then wait for the queue to be taken, then the next, applying its
// user's room moves from the window as it passes them, so it gets each event
// exactly if its user was in the event's room when it was published. When
// the window holds nothing after its cursor it goes live again, under the
// lock Publish holds, so no event falls between the two. Only a socket whose
// cursor falls out of the window (evicted, or before a gap) gets sync:reset,
// and then continues live from the newest position. Catching up never holds
// up publication or other sockets. A client's join:calendar or
// leave:calendar while its socket catches up is kept with the window entry
// that was newest then (client.clientMoves) and applied by the walk right
// after it: the socket gets the events a live one would have got.

// chunkItem is one thing a catch-up chunk does, in window order: move the
// socket into or out of room (isMove: a move of the window's, or of its
// client's), or queue a frame. through is the newest event offset the chunk
// had passed before the item: the cursor if the chunk stops there. off is a
// frame's offset; for a client's move, the offset of the entry it comes
// before (next: none, it comes after the window's newest).
type chunkItem struct {
	off     schema.Offset
	through schema.Offset
	frame   socketio.Frame
	isMove  bool
	join    bool
	room    string
	client  bool
	next    bool
}

// startCatchUp runs c's catch-up on a goroutine of its own, owned by the
// gateway (Shutdown waits for it). The caller holds idx.mu.
func (g *Gateway) startCatchUp(c *client) {
	if g.closed.Load() {
		return // shutting down: the socket is closed with the rest
	}
	g.catchUps.Add(1)
	go func() {
		defer g.catchUps.Done()
		g.catchUp(c)
	}()
}

// catchUp sends c the window after its cursor, chunk by chunk as its queue
// drains, until it is live again or gone.
func (g *Gateway) catchUp(c *client) {
	for {
		// Ended (a DISCONNECT) before Disconnected marks it gone: every
		// offer would fail, and each pass holds index.mu.
		if closed(c.conn) {
			return
		}
		drained := c.conn.Drained()
		if c.conn.Queued() >= max(c.conn.QueueCap()/2, 1) {
			select {
			case <-drained:
				continue
			case <-c.conn.Done():
				return
			case <-g.ctx.Done():
				return
			}
		}
		if g.catchUpStep(c) {
			return
		}
	}
}

// catchUpStep sends one chunk; it reports true when c is live again or gone.
func (g *Gateway) catchUpStep(c *client) bool {
	// The read lock is enough for a chunk: only this goroutine writes a
	// catching-up socket's cursor and rooms under it (Publish's fan-out
	// skips it, and whatever else changes them takes the write lock). So
	// the sockets of a failed node catching up here, each walking the
	// window, run beside Publish instead of holding it off chunk by chunk.
	g.idx.mu.RLock()
	if c.gone {
		g.idx.mu.RUnlock()
		return true
	}
	if g.window.lost(c.sent) {
		g.idx.mu.RUnlock()
		g.pubMu.Lock()
		g.idx.mu.Lock()
		if !c.gone {
			g.fellBehind(c)
		}
		g.idx.mu.Unlock()
		g.pubMu.Unlock()
		return true
	}
	end := g.sendChunk(c)
	g.idx.mu.RUnlock()
	if !end {
		return false
	}
	// Nothing more after the cursor a moment ago: take what came since and
	// go live, with Publish held off.
	g.pubMu.Lock()
	defer g.pubMu.Unlock()
	g.idx.mu.Lock()
	defer g.idx.mu.Unlock()
	switch {
	case c.gone:
		return true
	case g.window.lost(c.sent):
		g.fellBehind(c)
		return true
	case g.sendChunk(c):
		g.idx.setLive(c)
		return true
	}
	return false
}

// sendChunk walks the window after c's cursor: its user's moves change its
// rooms, the events of its rooms are queued, up to what half its queue holds.
// It reports whether it reached the end of the window. The caller holds
// idx.mu (read, at least); the walk holds the window's lock (Publish's
// window.add waits for it), the queuing after it does not.
func (g *Gateway) sendChunk(c *client) (end bool) {
	budget := min(c.conn.QueueCap()-c.conn.Queued(), max(c.conn.QueueCap()/2, 1))
	if budget <= 0 {
		return false
	}
	// Decide on a copy of the rooms, so that the walk only reads.
	rooms := append(roomSet(nil), c.rooms...)
	var items []chunkItem
	through := c.sent
	frames := 0
	move := func(it chunkItem) {
		if it.join {
			rooms.add(it.room)
		} else {
			rooms.remove(it.room)
		}
		it.through, it.isMove = through, true
		items = append(items, it)
	}
	// The client's moves in order, each right after the entry it came
	// after (clientMove.after).
	moves := c.clientMoves
	clientMovesBefore := func(e *entry) {
		for len(moves) > 0 && moves[0].after < e.seq {
			move(chunkItem{join: moves[0].join, room: moves[0].room, client: true, off: e.off})
			moves = moves[1:]
		}
	}
	end = true
	g.window.walk(c.sent, func(e *entry) bool {
		clientMovesBefore(e)
		if e.move != nil {
			if join, ok := e.move.touches(c.userID); ok {
				move(chunkItem{join: join, room: e.room})
			}
			return true
		}
		if rooms.has(e.room) {
			if frames == budget {
				end = false
				return false
			}
			items = append(items, chunkItem{off: e.off, through: through, frame: e.frame})
			frames++
		}
		through = e.off
		return true
	})
	if end {
		for _, m := range moves { // asked for after the window's newest entry
			move(chunkItem{join: m.join, room: m.room, client: true, next: true})
		}
	}
	// One set for the chunk's frames, queued with one call: the moves
	// before the first frame the queue refused are applied, as they would
	// be one frame at a time.
	var ps []engineio.Packet
	var refs []engineio.FrameRef
	for _, it := range items {
		if !it.isMove {
			refs = append(refs, engineio.FrameRef{Index: uint32(len(ps))})
			ps = append(ps, engineio.Packet{Data: it.frame})
		}
	}
	took := 0
	if len(ps) > 0 {
		took = c.conn.OfferFrames([]*engineio.Frames{engineio.NewFrames(ps)}, refs)
	}
	sent := 0
	for _, it := range items {
		if it.isMove {
			if it.join {
				c.rooms.add(it.room)
			} else {
				c.rooms.remove(it.room)
			}
			continue
		}
		if sent == took {
			// Something else took the room (an ack, a ping): stop before
			// this frame; the next chunk starts from it.
			c.sent = it.through
			g.countReplayed(c, sent)
			c.dropClientMoves(items)
			return false
		}
		c.sent = it.off
		sent++
	}
	if through.Compare(c.sent) > 0 {
		c.sent = through
	}
	g.countReplayed(c, sent)
	c.dropClientMoves(items)
	return end
}

// dropClientMoves forgets the client's moves the chunk's items passed for
// good: those before an entry at or before the new cursor, which no chunk
// walks again. The rest were applied to the rooms too, but the next chunk
// walks again what lies between the cursor and where this one stopped
// (only moves) and applies them again, in their order among the window's.
func (c *client) dropClientMoves(items []chunkItem) {
	n := 0
	for _, it := range items {
		if !it.client {
			continue
		}
		if it.next || it.off.Compare(c.sent) > 0 {
			break
		}
		n++
	}
	if n == len(c.clientMoves) {
		c.clientMoves = nil
	} else if n > 0 {
		c.clientMoves = slices.Delete(c.clientMoves, 0, n)
	}
}

func (g *Gateway) countReplayed(c *client, n int) {
	if n > 0 {
		g.metrics.replayed.Add(float64(n))
		g.metrics.messagesSent.Add(float64(n))
	}
}

// fellBehind handles a socket whose cursor is no longer in the window: it
// gets sync:reset at the newest position, its rooms as the view has them,
// and goes live. The caller holds pubMu and idx.mu.
func (g *Gateway) fellBehind(c *client) {
	pos := g.window.position()
	c.conn.Send(resetFrame("replay_unavailable", pos))
	c.sent = pos
	c.rooms = g.idx.view.rooms(c.userID)
	g.applyClientMovesAtNewest(c)
	g.idx.setLive(c)
	g.metrics.fellBehind.Inc()
	g.log.Info("socket fell out of the replay window: told to refetch", "user", c.userID)
}

// applyClientMovesAtNewest applies to rooms of the newest position the
// client's moves of a socket whose cursor left the window, except where a
// move of the window after one (its user removed, then accepted again)
// decided the room since or may have (entries after it were evicted), and a
// join of a calendar its user is no longer a member of: in doubt the
// view's rooms stand, which are its user's calendars.
// The caller holds pubMu and idx.mu.
func (g *Gateway) applyClientMovesAtNewest(c *client) {
	if len(c.clientMoves) == 0 {
		return
	}
	decided := map[string]uint64{} // room: seq of the window's newest move of it for this user
	g.window.walk(schema.Offset{}, func(e *entry) bool {
		if e.move != nil {
			if _, ok := e.move.touches(c.userID); ok {
				decided[e.room] = e.seq
			}
		}
		return true
	})
	for _, m := range c.clientMoves {
		switch {
		case decided[m.room] > m.after, g.window.evictedAfter(m.after):
			// Decided since by the stream, or perhaps by a move no longer
			// retained: the view's rooms stand.
		case !m.join:
			c.rooms.remove(m.room)
		case g.idx.view.member(c.userID, strings.TrimPrefix(m.room, schema.CalendarRoomPrefix)):
			c.rooms.add(m.room)
		}
	}
	c.clientMoves = nil
}

// roomsAt returns the rooms user's sockets were in just after pos: the
// view's, with every move after pos undone, newest first. The caller holds
// pubMu and idx.mu, so the view and the window agree.
func (g *Gateway) roomsAt(user string, pos schema.Offset) roomSet {
	rooms := g.idx.view.rooms(user)
	g.window.walkBack(pos, func(e *entry) bool {
		if e.move == nil {
			return true
		}
		if join, ok := e.move.touches(user); ok {
			if join {
				rooms.remove(e.room) // not a member before it joined
			} else {
				rooms.add(e.room) // a member until it left (or the room closed)
			}
		}
		return true
	})
	return rooms
}
