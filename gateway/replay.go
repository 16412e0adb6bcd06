package gateway

import (
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/koordi/koordi-realtime/gateway/socketio"
	"github.com/koordi/koordi-realtime/schema"
)

// entry is one published event or room move kept for replay. An event's
// encoded frame is the one live members got, so a replay sends the very same
// bytes. A move is kept at the offset of the event it precedes (or just after
// its transaction's last event), so a socket catching up from a position
// applies it exactly when a live socket did.
type entry struct {
	off   schema.Offset
	seq   uint64 // the entry's number in the order added (window.added): also orders a move and the event it precedes
	room  string
	frame socketio.Frame // nil for a move
	move  *movedEntry
	at    time.Time
}

// movedEntry is a move as the window keeps it: for a close, the users who
// were members, so that a recovery reaching back past it knows who was in
// the room before.
type movedEntry struct {
	op      schema.MoveOp
	user    string
	members []string
}

// touches reports whether the move changes user's rooms, and how: join,
// or leave (a close leaves).
func (m *movedEntry) touches(user string) (join, ok bool) {
	switch m.op {
	case schema.MoveJoin:
		return true, m.user == user
	case schema.MoveLeave:
		return false, m.user == user
	case schema.MoveClose:
		return false, slices.Contains(m.members, user)
	}
	return false, false
}

// entryOverhead approximates an entry's memory beyond its frame and room.
const entryOverhead = 96

func (e *entry) size() int {
	n := len(e.frame) + len(e.room) + entryOverhead
	if e.move != nil {
		n += 48 + len(e.move.user) + 40*len(e.move.members)
	}
	return n
}

// window is the replay buffer: the events published recently, in commit
// order, bounded by age, count and bytes.
//
// It also knows which positions it can resume from. Every event after
// evictFloor that this process published is retained; every event after
// startFloor that exists was or will be published by this process (once
// startKnown). A position is therefore resumable if it is not before
// evictFloor and, for sessions begun in another process, not before
// startFloor either.
type window struct {
	maxAge    time.Duration
	maxEvents int
	maxBytes  int

	mu         sync.Mutex
	buf        []entry // buf[head:] live, ascending offsets
	head       int
	bytes      int
	newest     schema.Offset // newest offset published, even if evicted
	published  bool
	evictFloor schema.Offset
	startFloor schema.Offset
	startKnown bool
	// Positions before resetFloor crossed a sync:reset gap (once
	// resetKnown). The floor sits just after the newest offset published
	// before the gap, so a session that had received everything before it
	// is still told; a stream start reported after the gap raises it there.
	resetFloor schema.Offset
	resetKnown bool
	added      uint64        // entries ever added, evicted ones too: the newest entry's seq
	tail       schema.Offset // the newest entry's offset, a move's too (a trailing move is after newest)
}

func newWindow(maxAge time.Duration, maxEvents, maxBytes int) *window {
	return &window{maxAge: maxAge, maxEvents: maxEvents, maxBytes: maxBytes}
}

// resumeAfter records that every event after off will be published.
func (w *window) resumeAfter(off schema.Offset) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.published {
		w.startFloor, w.startKnown = off, true
	}
	if w.resetKnown && off.Compare(w.resetFloor) > 0 {
		w.resetFloor = off
	}
}

// accepts reports whether off is after every offset published so far.
func (w *window) accepts(off schema.Offset) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return !w.published || off.Compare(w.newest) > 0
}

// acceptsTx reports whether a transaction beginning at off (its first
// event's offset, or its commit's for one of moves only) is after every
// entry so far, moves too: a move-only transaction the stream sends again
// must not move its sockets again.
func (w *window) acceptsTx(off schema.Offset) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.added == 0 || off.Compare(w.tail) > 0 // tail is at or after newest
}

// add appends e (an event whose offset accepts approved, or a move) and
// evicts what no longer fits.
func (w *window) add(e entry) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if e.move == nil {
		if !w.published {
			w.published = true
			if !w.startKnown {
				// Events before the first one we saw may exist and were
				// never ours to replay.
				w.startFloor, w.startKnown = e.off, true
			}
		}
		w.newest = e.off
	}
	w.added++
	e.seq = w.added
	if e.off.Compare(w.tail) > 0 {
		w.tail = e.off
	}
	if w.maxEvents <= 0 || w.maxBytes <= 0 || w.maxAge <= 0 {
		w.evictFloor = e.off
		return
	}
	w.buf = append(w.buf, e)
	w.bytes += e.size()
	for w.len() > w.maxEvents || w.bytes > w.maxBytes {
		w.evictOne()
	}
}

// evict drops entries older than the window's age.
func (w *window) evict(now time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	limit := now.Add(-w.maxAge)
	for w.len() > 0 && w.buf[w.head].at.Before(limit) {
		w.evictOne()
	}
}

func (w *window) len() int { return len(w.buf) - w.head }

func (w *window) evictOne() {
	e := &w.buf[w.head]
	w.evictFloor = e.off
	w.bytes -= e.size()
	*e = entry{} // release the frame
	w.head++
	// Compact when the dead prefix dominates, so memory follows the live part.
	if w.head >= 1024 && w.head*2 >= len(w.buf) {
		n := copy(w.buf, w.buf[w.head:])
		clear(w.buf[n:])
		w.buf = w.buf[:n]
		w.head = 0
	}
}

// reset forgets everything: positions before now cannot be resumed and are
// told to refetch.
func (w *window) reset() {
	w.mu.Lock()
	defer w.mu.Unlock()
	clear(w.buf)
	w.buf, w.head, w.bytes = w.buf[:0], 0, 0
	w.evictFloor = w.newest
	// A move-only transaction before the gap must not keep a live
	// socket's cursor (raised to tail by a client's move) above events
	// after it.
	w.tail = w.newest
	if floor := w.newest.Next(); !w.resetKnown || floor.Compare(w.resetFloor) > 0 {
		w.resetFloor = floor
	}
	w.resetKnown = true
}

// position is where a session that starts now begins: the newest published
// offset, or the reset floor if a gap came after it.
func (w *window) position() schema.Offset {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.resetKnown && w.resetFloor.Compare(w.newest) > 0 {
		return w.resetFloor
	}
	return w.newest
}

// lastSeq is the seq of the newest entry added: what comes now comes after
// it.
func (w *window) lastSeq() uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.added
}

// tailOffset is the offset of the newest entry added, a move's too.
func (w *window) tailOffset() schema.Offset {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.tail
}

// evictedAfter reports whether entries added after seq are no longer
// retained (evicted, or dropped by a reset).
func (w *window) evictedAfter(seq uint64) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	oldest := w.added + 1 // none retained
	if w.len() > 0 {
		oldest = w.buf[w.head].seq
	}
	return oldest > seq+1
}

// covers reports whether a session at pos can resume without a gap.
// sameProcess tells whether the session began in this process.
func (w *window) covers(pos schema.Offset, sameProcess bool) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if pos.Compare(w.evictFloor) < 0 || w.resetKnown && pos.Compare(w.resetFloor) < 0 {
		return false
	}
	return sameProcess || (w.startKnown && pos.Compare(w.startFloor) >= 0)
}

// beforeReset reports whether pos lies before a sync:reset gap.
func (w *window) beforeReset(pos schema.Offset) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.resetKnown && pos.Compare(w.resetFloor) < 0
}

// walk calls fn for each retained entry after pos, oldest first, until fn
// returns false. It runs under the window's lock: fn only looks and copies,
// never sends or locks.
func (w *window) walk(pos schema.Offset, fn func(*entry) bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	live := w.buf[w.head:]
	for j := w.search(pos); j < len(live); j++ {
		if !fn(&live[j]) {
			return
		}
	}
}

// walkBack is walk newest first.
func (w *window) walkBack(pos schema.Offset, fn func(*entry) bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	live := w.buf[w.head:]
	first := w.search(pos)
	for j := len(live) - 1; j >= first; j-- {
		if !fn(&live[j]) {
			return
		}
	}
}

// search is the index in buf[head:] of the first entry after pos. Caller
// holds mu.
func (w *window) search(pos schema.Offset) int {
	live := w.buf[w.head:]
	return sort.Search(len(live), func(i int) bool { return live[i].off.Compare(pos) > 0 })
}

// lost reports whether events after pos may be missing from the window: a
// socket at pos cannot catch up from it.
func (w *window) lost(pos schema.Offset) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return pos.Compare(w.evictFloor) < 0 || w.resetKnown && pos.Compare(w.resetFloor) < 0
}

// stats reports the retained events and bytes, for metrics.
func (w *window) stats() (events, bytes int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.len(), w.bytes
}
