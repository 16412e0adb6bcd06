package gateway

import (
	"github.com/koordi/koordi-realtime/gateway/socketio"
	"github.com/koordi/koordi-realtime/schema"
)

// pending is what a batch of transactions owes each socket between two
// flushes. Queueing a frame costs a lock of the socket's connection and a
// look at memory no other socket shares; a backlog of transactions queued
// one frame at a time paid that for every delivery (a quarter of the
// server's CPU in the fan-out benchmark). Collected here, a socket's frames
// of the whole batch are queued in one call.
//
// Frames are kept in one array in fan-out order, each socket's chained by
// index from its client (pendFirst, pendLast), so collecting allocates
// nothing per socket and a socket's frames stay in order. Gateway.pend,
// under pubMu.
type pending struct {
	entries []pendingEntry
	touched []*client // sockets with frames, in the order they got their first
	frames  [][]byte  // scratch for one socket's frames at a flush
}

type pendingEntry struct {
	frame socketio.Frame
	off   schema.Offset
	next  int32 // index+1 of the socket's next entry; 0: its last
}

// maxPending bounds the frames collected before a flush: a bulk transaction
// to a large room flushes as it goes. The gateway keeps its entries (at most
// 3 MiB) from batch to batch; a pool emptied at every collection made each
// batch of a backlog grow them again.
const maxPending = 1 << 16

// add owes c the frame f of the event at off.
func (p *pending) add(c *client, f socketio.Frame, off schema.Offset) {
	p.entries = append(p.entries, pendingEntry{frame: f, off: off})
	i := int32(len(p.entries))
	if c.pendLast == 0 {
		c.pendFirst = i
		p.touched = append(p.touched, c)
	} else {
		p.entries[c.pendLast-1].next = i
	}
	c.pendLast = i
}

func (p *pending) full() bool { return len(p.entries) >= maxPending }

// flush queues every socket's frames with one Offer call each. A socket
// that takes only part (its queue filled) has its cursor at the last frame
// it took and joins behind, to catch up from the window like a socket
// refused a single frame. The caller holds pubMu and idx.mu (read), as
// fanOut does: only this path writes a live socket's cursor.
func (g *Gateway) flush(p *pending, behind []*client) (sent int, _ []*client) {
	for _, c := range p.touched {
		frames := p.frames[:0]
		for i := c.pendFirst; i != 0; i = p.entries[i-1].next {
			frames = append(frames, p.entries[i-1].frame)
		}
		n := c.conn.OfferAll(frames)
		if n > 0 {
			// The n-th frame of the chain: its offset is the cursor.
			i := c.pendFirst
			for k := 1; k < n; k++ {
				i = p.entries[i-1].next
			}
			c.sent = p.entries[i-1].off
			sent += n
		}
		switch {
		case n == len(frames):
		case closed(c.conn):
			g.metrics.droppedClosed.Add(float64(len(frames) - n))
		default:
			c.lagging = true
			behind = append(behind, c)
		}
		c.pendFirst, c.pendLast = 0, 0
		clear(frames)
		p.frames = frames[:0]
	}
	clear(p.entries) // the frames belong to the sockets' queues now
	p.entries = p.entries[:0]
	clear(p.touched)
	p.touched = p.touched[:0]
	return sent, behind
}
