package engineio

import (
	"slices"
	"sync"
)

// Frames is a set of packets queued to many connections: each connection's
// queue holds, per packet, an 8-byte slot naming the set and the packet's
// index in it, not the packet. A fan-out of one event to thousands of
// sockets thus adds no pointer per recipient: the queues are memory the
// garbage collector never scans, they grow a quarter as fast, and the
// packets stay shared. A connection keeps a set alive while one of its
// slots points into it, so a sender makes sets of packets that go to the
// same connections (the gateway: one set per room and batch), and a slow
// connection holds on to little more than its own packets.
type Frames struct {
	ps []Packet
}

// NewFrames makes a set of ps and takes it over: neither the slice nor the
// packets' data may be modified afterwards.
func NewFrames(ps []Packet) *Frames { return &Frames{ps: ps} }

// Len is the number of packets in the set.
func (f *Frames) Len() int { return len(f.ps) }

// At returns packet i of the set.
func (f *Frames) At(i int) Packet { return f.ps[i] }

// FrameRef names a packet for [Conn.OfferFrames]: packet Index of the
// call's sets[Set].
type FrameRef struct {
	Set, Index uint32
}

// slot is one queued packet: f.refs' set number ref, packet idx.
type slot struct {
	ref uint32
	idx uint32
}

// sendQueue is a connection's packets waiting for the wire: slots in order,
// and the sets they point into, oldest first. refs[i] is set number
// base+i; the sets before refHead are no longer pointed into (nil).
// Sequence numbers are uint32 and wrap: only differences are used. The
// connection's mu guards it.
type sendQueue struct {
	slots   []slot
	head    int // slots[head:] wait
	refs    []*Frames
	refHead int
	base    uint32
}

func (q *sendQueue) len() int { return len(q.slots) - q.head }

// packet resolves s.
func (q *sendQueue) packet(s slot) Packet { return q.refs[s.ref-q.base].ps[s.idx] }

// reserve makes room for n more slots, moving the waiting ones to the
// front first when that is enough: a queue drained by turns keeps its
// array.
func (q *sendQueue) reserve(n int) {
	if cap(q.slots)-len(q.slots) >= n {
		return
	}
	if q.head > 0 {
		k := copy(q.slots, q.slots[q.head:])
		q.slots, q.head = q.slots[:k], 0
	}
	q.slots = slices.Grow(q.slots, n)
}

// ref returns f's set number, adding f to refs unless it is the newest.
func (q *sendQueue) ref(f *Frames) uint32 {
	if n := len(q.refs); n > q.refHead && q.refs[n-1] == f {
		return q.base + uint32(n-1)
	}
	if len(q.refs) == cap(q.refs) && q.refHead > 0 {
		k := copy(q.refs, q.refs[q.refHead:])
		clear(q.refs[k:])
		q.refs = q.refs[:k]
		q.base += uint32(q.refHead)
		q.refHead = 0
	}
	q.refs = append(q.refs, f)
	return q.base + uint32(len(q.refs)-1)
}

// pushFrom queues the packets refs name in sets; the caller checked the
// bound.
func (q *sendQueue) pushFrom(sets []*Frames, refs []FrameRef) {
	q.reserve(len(refs))
	for _, r := range refs {
		f := sets[r.Set]
		if int(r.Index) >= len(f.ps) {
			// A caller's bug, reported here rather than by a writer later.
			panic("engineio: FrameRef index out of its set")
		}
		q.slots = append(q.slots, slot{ref: q.ref(f), idx: r.Index})
	}
}

// push queues ps, a set of their own (control packets, replies: not the
// fan-out path).
func (q *sendQueue) push(ps ...Packet) {
	if len(ps) == 0 {
		return // no set no slot points into
	}
	f := &Frames{ps: slices.Clone(ps)}
	q.reserve(len(ps))
	r := q.ref(f)
	for i := range ps {
		q.slots = append(q.slots, slot{ref: r, idx: uint32(i)})
	}
}

// take appends to dst the packets at the head, at least one and then as
// long as their data stays within limit (all of them when limit < 0), and
// takes them out of the queue.
func (q *sendQueue) take(dst []Packet, limit int) []Packet {
	n, size := q.head, 0
	for n < len(q.slots) {
		p := q.packet(q.slots[n])
		if limit >= 0 && n > q.head && size+len(p.Data) > limit {
			break
		}
		size += len(p.Data)
		dst = append(dst, p)
		n++
	}
	q.head = n
	if q.head == len(q.slots) {
		q.slots, q.head = q.slots[:0], 0
		clear(q.refs)
		q.base += uint32(len(q.refs))
		q.refs, q.refHead = q.refs[:0], 0
		return dst
	}
	keep := int(q.slots[q.head].ref - q.base)
	clear(q.refs[q.refHead:keep])
	q.refHead = keep
	return dst
}

// packetBufs holds the slices turns resolve their slots into: taken for
// the wire, they are framed or encoded at once and given back, so no
// connection keeps one.
var packetBufs = sync.Pool{New: func() any { return new([]Packet) }}

// maxPooledPackets bounds what goes back to packetBufs.
const maxPooledPackets = 4096

func getPackets() *[]Packet { return packetBufs.Get().(*[]Packet) }

func putPackets(p *[]Packet) {
	if cap(*p) > maxPooledPackets {
		return
	}
	clear(*p) // drop references to sent packets
	*p = (*p)[:0]
	packetBufs.Put(p)
}
