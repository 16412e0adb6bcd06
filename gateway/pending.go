package gateway

import (
	"github.com/koordi/koordi-realtime/gateway/engineio"
	"github.com/koordi/koordi-realtime/gateway/socketio"
	"github.com/koordi/koordi-realtime/schema"
)

// pending is what a batch of transactions owes each socket between two
// flushes. Queueing a frame costs a lock of the socket's connection and a
// look at memory no other socket shares; a backlog of transactions queued
// one frame at a time paid that for every delivery (a quarter of the
// server's CPU in the fan-out benchmark). Collected here, a socket's frames
// are queued in one call per flush.
//
// What is owed is kept in one array in fan-out order, each socket's chained
// by index from its client (pendFirst, pendLast), so collecting allocates
// nothing per socket and a socket's frames stay in order. The frames
// themselves are collected once each, by room: at a flush each room's
// become one engineio.Frames, which its sockets' queues point into by
// index, so neither the entries nor the queues hold a pointer per delivery,
// and a socket that drains slowly keeps alive only sets of frames of its
// own rooms (one set of the whole batch would have kept every room's
// frames alive for it). Gateway.pend, under pubMu.
type pending struct {
	entries []pendingEntry
	touched []*client // sockets with frames, in the order they got their first
	longest int32     // the most frames one socket is owed
	sets    []pendingSet
	frozen  []*engineio.Frames  // scratch: sets made at a flush, as sets
	refs    []engineio.FrameRef // scratch for one socket's frames at a flush
	behind  []*client           // scratch: the sockets a flush found without room
	// from is the window's position when collecting began (the batch's
	// start or the last flush, see Gateway.flush): a socket refused all of
	// its frames has had every event up to it. A move recorded since (at
	// the flush before it) was applied to the live socket's rooms already;
	// its catch-up applies it again, which leaves them as they are.
	from schema.Offset
}

// pendingSet is one room's frames owed since the last flush, in order,
// with their events' offsets.
type pendingSet struct {
	room   *room
	frames []engineio.Packet
	offs   []schema.Offset
}

// pendingEntry is one delivery: 12 bytes, for a batch of a backlog has
// hundreds of thousands (what is per event, the frame and its offset, is in
// the set).
type pendingEntry struct {
	ref  engineio.FrameRef // Set indexes pending.sets
	next int32             // index+1 of the socket's next entry; 0: its last
}

const (
	// maxPending bounds the deliveries collected before a flush, so a bulk
	// transaction to a large room flushes as it goes. The gateway keeps
	// the entries (3 MiB at most) from batch to batch; a pool, emptied at
	// every collection, made each batch of a backlog grow them again. A
	// flush visits every socket owed something, and a visit is memory no
	// other socket shares: the fewer flushes a backlog takes, the less it
	// costs (2^18 against 2^16: a tenth of the server's CPU in fan-out).
	maxPending = 1 << 18
	// maxOwed bounds the frames one socket is owed before a flush: well
	// within its queue (engineio.DefaultSendQueue), which its writer
	// drains between flushes, so that a batch of bulk transactions to a
	// small room does not send its sockets to catch up for want of room.
	maxOwed = 512
)

// addFrame makes f, the frame of the event at off in room rm, one the
// batch owes, and returns the reference add takes. Once per event, at its first
// recipient.
func (p *pending) addFrame(rm *room, f socketio.Frame, off schema.Offset) engineio.FrameRef {
	if rm.pendSet == 0 {
		p.sets = append(p.sets, pendingSet{room: rm})
		rm.pendSet = int32(len(p.sets))
	}
	s := &p.sets[rm.pendSet-1]
	s.frames = append(s.frames, engineio.Packet{Data: f})
	s.offs = append(s.offs, off)
	return engineio.FrameRef{Set: uint32(rm.pendSet - 1), Index: uint32(len(s.frames) - 1)}
}

// add owes c the frame ref names (see addFrame).
func (p *pending) add(c *client, ref engineio.FrameRef) {
	p.entries = append(p.entries, pendingEntry{ref: ref})
	i := int32(len(p.entries))
	if c.pendLast == 0 {
		c.pendFirst, c.pendN = i, 0
		p.touched = append(p.touched, c)
	} else {
		p.entries[c.pendLast-1].next = i
	}
	c.pendLast = i
	c.pendN++
	p.longest = max(p.longest, c.pendN)
}

// full says the batch must be flushed before its next event.
func (p *pending) full() bool { return len(p.entries) >= maxPending || p.longest >= maxOwed }

// flush queues every socket's frames with one OfferFrames each and returns
// how many it queued, how many were for sockets that had closed, and the
// sockets that took only part (their queues
// filled), to be suspended before anything else is published. Such a
// socket's cursor is left just before the first frame it refused: the last
// it took, or from when it took none. Its rooms are right for that cursor,
// since flushes come before every move: its catch-up from the window then
// gets exactly what it would have. The caller holds pubMu and idx.mu
// (read); only the publisher writes a live socket's cursor.
func (p *pending) flush() (sent, dropped int, behind []*client) {
	behind = p.behind[:0]
	sets := p.frozen[:0]
	for i := range p.sets {
		// The set takes the room's frames over; the room starts anew.
		sets = append(sets, engineio.NewFrames(p.sets[i].frames))
		p.sets[i].room.pendSet = 0
	}
	for _, c := range p.touched {
		refs := p.refs[:0]
		for i := c.pendFirst; i != 0; i = p.entries[i-1].next {
			refs = append(refs, p.entries[i-1].ref)
		}
		n := c.conn.OfferFrames(sets, refs)
		if n > 0 {
			last := refs[n-1] // the newest frame taken: the socket's cursor
			c.sent = p.sets[last.Set].offs[last.Index]
			sent += n
		}
		switch {
		case n == len(refs):
		case closed(c.conn):
			dropped += len(refs) - n
		default:
			if p.from.Compare(c.sent) > 0 {
				// Nothing taken: up to from it had everything.
				c.sent = p.from
			}
			behind = append(behind, c)
		}
		c.pendFirst, c.pendLast, c.pendN = 0, 0, 0
		p.refs = refs[:0]
	}
	p.entries = p.entries[:0]
	clear(p.sets)
	p.sets = p.sets[:0]
	clear(sets)
	p.frozen = sets[:0]
	clear(p.touched)
	p.touched = p.touched[:0]
	p.longest = 0
	p.behind = behind
	return sent, dropped, behind
}
