package gateway

import (
	"context"
	"encoding/json"
	"time"

	"github.com/koordi/koordi-realtime/gateway/engineio"
	"github.com/koordi/koordi-realtime/gateway/socketio"
	"github.com/koordi/koordi-realtime/schema"
)

// Publish delivers a committed transaction: its room moves are applied and
// its events published in the transaction's order (each move before the
// event at its position), so a member added receives member:added and
// every later event of the calendar, a member removed nothing after the
// removal, and a deleted calendar's room closes after calendar:deleted.
// Each event and move is recorded in the replay window, and each event is
// encoded once and queued to every socket of its room that keeps up; a
// socket without room in its queue is not cut but catches up from the
// window at its own pace (see catchUp). Events whose offset is not after the
// newest published one are dropped as duplicates (the stream re-sends what
// it had already handed over after a replication reconnect), and so are the
// moves of such a transaction, which were applied the first time. Moves of a
// transaction the loaded membership snapshot already saw change no
// membership (they are in it). Calls are serialised; Publish never blocks on
// a socket. Publish takes tx's events over: each event's Data is released
// once it is encoded, so a bulk transaction's payloads do not stay in
// memory beside their frames.
func (g *Gateway) Publish(ctx context.Context, tx schema.Transaction) error {
	return g.PublishBatch(ctx, []schema.Transaction{tx})
}

// PublishBatch publishes txs, in commit order, as Publish publishes each,
// but queues each socket's frames of the whole batch in one go: a stream
// that is behind (a backlog after a restart, a burst of commits) hands over
// what it has ready, and a socket in many of those transactions' rooms is
// visited once instead of once per event. Queueing waits only for the
// batch, never for a later call, so a batch of one costs no latency. Frames
// are queued before each move is applied, and a socket that falls behind
// is suspended at once, so its rooms and its cursor agree (see
// pending.flush).
// PublishBatch takes the events of txs over, as Publish does.
func (g *Gateway) PublishBatch(ctx context.Context, txs []schema.Transaction) error {
	return g.publishBatch(ctx, txs, false)
}

// PublishBehind is PublishBatch for a stream that, when behind is set,
// already holds the transactions after txs and hands them over at once
// (cdc.BacklogSink): what txs owe the sockets may then wait for those
// calls, up to maxHold, instead of being queued at the end of this one. A
// backlog of single-row commits to rooms of 100 owes each socket about one
// frame per batch of 64; queued batch by batch, each of a catch-up's 10
// million deliveries to 10,000 sockets cost a visit of its socket (its
// lock, its queue: half the server's CPU, and about one write(2) per 15
// frames). Held, a socket is visited once for many batches (pending.full
// bounds how many), and its writer finds them all queued at its turn. A
// stream that is not behind gains nothing by waiting and does not hold.
// Events are in the replay window as soon as they are published, held or
// not: a socket that connects or catches up meanwhile gets them there.
func (g *Gateway) PublishBehind(ctx context.Context, txs []schema.Transaction, behind bool) error {
	return g.publishBatch(ctx, txs, behind)
}

// maxHold bounds how long PublishBehind holds frames: the next call comes
// at once unless the stream stopped (its connection lost, the database
// gone) after promising more.
const maxHold = 100 * time.Millisecond

func (g *Gateway) publishBatch(ctx context.Context, txs []schema.Transaction, behind bool) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	g.pubMu.Lock()
	defer g.pubMu.Unlock()
	b := &g.held
	b.now = g.cfg.Now()
	if len(g.pend.touched) == 0 {
		g.pend.from = g.window.position() // a Reset or ResumeAfter may have moved it since
	}
	for i := range txs {
		if g.publishTx(b, &txs[i]) {
			b.fresh = append(b.fresh, txs[i].CommitTime)
		}
	}
	if behind && !g.closed.Load() {
		if g.holdTimer == nil {
			g.holdTimer = time.AfterFunc(maxHold, g.releaseHeld)
		}
		return nil
	}
	g.release()
	return nil
}

// releaseHeld queues what was held past maxHold.
func (g *Gateway) releaseHeld() {
	g.pubMu.Lock()
	defer g.pubMu.Unlock()
	g.release()
}

// release queues what was collected and not yet queued (g.held), and counts
// it. The caller holds pubMu.
func (g *Gateway) release() {
	if g.holdTimer != nil {
		g.holdTimer.Stop()
		g.holdTimer = nil
	}
	b := &g.held
	g.flush(b)
	g.metrics.messagesSent.Add(float64(b.sent))
	// Read again: the histogram promises "queued to every member socket".
	queued := g.cfg.Now()
	for _, commit := range b.fresh {
		if commit.After(g.started) {
			g.metrics.latency.Observe(queued.Sub(commit).Seconds())
		}
	}
	b.sent = 0
	b.fresh = b.fresh[:0]
}

// batch is the state of the publications collected and not yet queued
// (Gateway.held).
type batch struct {
	now   time.Time
	sent  int
	fresh []time.Time // commit times of the transactions with new events
}

// flush queues what the batch collected so far (g.pend), suspends the
// sockets that fell behind before anything else is published, and starts
// collecting anew from the window's position. The caller holds pubMu.
func (g *Gateway) flush(b *batch) {
	if len(g.pend.touched) > 0 {
		g.idx.mu.RLock()
		sent, dropped, behind := g.pend.flush()
		g.idx.mu.RUnlock()
		b.sent += sent
		if dropped > 0 {
			g.metrics.droppedClosed.Add(float64(dropped))
		}
		if len(behind) > 0 {
			// Between the read lock and this one only a socket's end can
			// come (a client's join:calendar/leave:calendar, Connected and
			// catch-ups going live wait for pubMu): suspend skips a socket
			// that ended.
			g.idx.mu.Lock()
			for _, c := range behind {
				g.suspend(c)
			}
			g.idx.mu.Unlock()
			clear(behind)
		}
	}
	g.pend.from = g.window.position()
}

// suspend takes a live socket whose queue refused frames out of its rooms
// to catch up from the window after its cursor. The caller holds pubMu and
// idx.mu.
func (g *Gateway) suspend(c *client) {
	if g.idx.suspend(c) {
		g.startCatchUp(c)
	}
}

// publishTx collects tx's events into b and applies its moves, and reports
// whether it had an event not published before. The caller holds pubMu.
func (g *Gateway) publishTx(b *batch, tx *schema.Transaction) bool {
	at := func(i int) schema.Offset {
		switch {
		case i < len(tx.Events):
			return tx.Events[i].Offset
		case len(tx.Events) > 0:
			return tx.Events[len(tx.Events)-1].Offset.Next()
		}
		return schema.Offset{LSN: tx.CommitLSN}
	}
	newTx := g.window.acceptsTx(at(0))
	seen := g.idx.view.saw(tx.Xid) // the view changes only under pubMu
	moves := tx.Moves
	fresh := false
	for i := 0; i <= len(tx.Events); i++ {
		for ; len(moves) > 0 && moves[0].At <= i; moves = moves[1:] {
			if newTx {
				g.flush(b) // every socket's frames before its rooms change
				g.publishMove(&moves[0], at(i), seen, b.now)
			}
		}
		if i == len(tx.Events) {
			break
		}
		ev := &tx.Events[i]
		if !g.window.accepts(ev.Offset) {
			g.metrics.droppedDup.Inc()
			continue
		}
		fresh = true
		f := EncodeEnvelope(ev)
		ev.Data = nil
		// Aged by this process's clock from publication, not by the
		// database's commit time: a skewed database clock, or a backlog
		// older than the window (catching up after an outage), would
		// otherwise evict events as they are published.
		g.window.add(entry{off: ev.Offset, room: ev.Room, frame: f, at: b.now})
		g.idx.mu.RLock()
		g.collect(ev, f)
		g.idx.mu.RUnlock()
		if g.pend.full() {
			g.flush(b)
		}
	}
	g.window.evict(b.now)
	return fresh
}

// publishMove applies a move and records it in the window at off, the
// offset of the event it precedes. The caller holds pubMu.
func (g *Gateway) publishMove(m *schema.Move, off schema.Offset, seen bool, now time.Time) {
	g.idx.mu.Lock()
	defer g.idx.mu.Unlock()
	members := g.idx.applyMove(m, seen)
	g.window.add(entry{off: off, room: m.Room, move: &movedEntry{op: m.Op, user: m.User, members: members}, at: now})
}

// collect owes f to every live member of the event's room that is not
// catching up and has not had the event (a socket that just caught up may
// be past it). The caller holds pubMu and idx.mu (read). Nothing here
// allocates per recipient.
func (g *Gateway) collect(ev *schema.Envelope, f socketio.Frame) {
	rm := g.idx.rooms[ev.Room]
	if rm == nil {
		return
	}
	var ref engineio.FrameRef
	owed := false
	for _, c := range rm.members {
		// Catching up, or already sent: one ordered path per socket,
		// never twice, never backwards.
		if !c.lagging && ev.Offset.Compare(c.sent) > 0 {
			if !owed {
				ref, owed = g.pend.addFrame(rm, f, ev.Offset), true
			}
			g.pend.add(c, ref)
		}
	}
}

func closed(c conn) bool {
	select {
	case <-c.Done():
		return true
	default:
		return false
	}
}

// EncodeEnvelope is the Socket.IO packet Publish sends every socket of the
// envelope's room: [event, payload, offset], encoded once per room.
func EncodeEnvelope(ev *schema.Envelope) socketio.Frame {
	data := ev.Data
	if len(data) == 0 {
		data = json.RawMessage("null")
	}
	off := make([]byte, 0, 27)
	off = append(off, '"')
	off = ev.Offset.AppendText(off)
	off = append(off, '"')
	return socketio.EncodeEvent(Namespace, ev.Event, data, off)
}

// LoadMemberships replaces the membership view with a database snapshot
// (cdc.ReadMemberships). Publish then applies the moves of every
// transaction the snapshot did not see. Call it before the first Publish,
// and again after a gap in the stream (see Reset); every socket's rooms
// follow the new view.
func (g *Gateway) LoadMemberships(s *schema.MembershipSnapshot) {
	g.pubMu.Lock()
	defer g.pubMu.Unlock()
	g.release() // frames owed under the old rooms first
	g.loadMembershipsLocked(s)
}

func (g *Gateway) loadMembershipsLocked(s *schema.MembershipSnapshot) {
	g.idx.mu.Lock()
	defer g.idx.mu.Unlock()
	g.idx.view.load(s)
	for _, sockets := range g.idx.users {
		for _, c := range sockets {
			if !c.lagging {
				for _, r := range c.rooms {
					g.idx.leaveRoom(c, r)
				}
			}
			c.rooms = g.idx.view.rooms(c.userID)
			if !c.lagging {
				for _, r := range c.rooms {
					g.idx.joinRoom(c, r)
				}
			}
		}
	}
}

// Reset tells every connected socket that changes may have been lost (the
// replication slot was recreated, a publication or table came back): it sends
// sync:reset {reason} and empties the replay window, so sessions from before
// the gap — also one that had received every event before it, and one from a
// previous process when the gap is found at start, before anything was
// published — connect fresh and get sync:reset too, instead of recovering.
// The event's offset argument is the position after the gap, so a client told
// once is not told again. With memberships (read after the gap) the view and
// every socket's rooms are brought up to date too: membership changes in the
// gap were lost with the rest.
func (g *Gateway) Reset(reason string, memberships *schema.MembershipSnapshot) {
	g.pubMu.Lock()
	defer g.pubMu.Unlock()
	g.release() // what was published before the gap, before sync:reset
	g.window.reset()
	g.gapWarned.Store(false)
	if memberships != nil {
		g.loadMembershipsLocked(memberships)
	}
	pos := g.window.position()
	f := resetFrame(reason, pos)
	g.idx.mu.Lock()
	defer g.idx.mu.Unlock()
	for _, u := range g.idx.users {
		for _, c := range u {
			// One catching up finds itself out of the window and is told
			// by its catch-up.
			if !c.lagging && c.conn.Send(f) {
				c.sent = pos
			}
		}
	}
	if g.idx.sockets > 0 {
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
