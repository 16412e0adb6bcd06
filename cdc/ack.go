package cdc

import (
	"sync"
	"time"
)

// maxMarks bounds the retain queue. Marks closer together than
// Retain/markBuckets are merged, so the queue holds about markBuckets
// entries; maxMarks is a backstop against clock jumps.
const (
	markBuckets = 128
	maxMarks    = 4 * markBuckets
)

// mark records that everything up to lsn was handed off at time at.
type mark struct {
	at  time.Time
	lsn uint64
}

// acker decides which position is safe to confirm to PostgreSQL. The
// delivery goroutine reports hand-offs; the stream goroutine asks for the
// safe position when it sends a standby status update. Its mutex is a leaf
// lock: nothing else is locked while it is held.
type acker struct {
	retain time.Duration

	mu sync.Mutex
	// floor is the slot's confirmed position when the current session
	// started: a status update never reports less.
	floor uint64
	// handed is the end LSN of the newest transaction handed off (or the
	// idle server position); handedCommit its commit LSN (0 for an idle
	// position).
	handed       uint64
	handedCommit uint64
	marks        []mark // retain > 0 only: hand-offs not yet older than retain
	trailing     uint64 // retain > 0 only: newest mark older than retain
}

func newAcker(retain time.Duration) *acker { return &acker{retain: retain} }

// setFloor records the slot's confirmed position at the start of a session.
func (a *acker) setFloor(lsn uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.floor = max(a.floor, lsn)
}

// handOff records that the transaction ending at end (commit LSN commit)
// and everything before it was handed off at now.
func (a *acker) handOff(end, commit uint64, now time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.advance(end, now)
	a.handedCommit = commit
}

// idle advances to the server's WAL position when nothing is in flight:
// the stream is outside a transaction and the newest transaction it queued
// (ending at queued) has been handed off. Without this an idle slot would
// pin WAL written by other databases or unpublished tables forever.
func (a *acker) idle(queued, serverEnd uint64, now time.Time) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if queued > a.handed {
		return false
	}
	if serverEnd <= a.handed {
		return true
	}
	a.advance(serverEnd, now)
	return true
}

func (a *acker) advance(lsn uint64, now time.Time) {
	if lsn <= a.handed {
		return
	}
	a.handed = lsn
	if a.retain <= 0 {
		return
	}
	// Merging into the newest mark keeps that mark's (older) time, so the
	// merged position may be confirmed up to Retain/markBuckets early —
	// still only handed-off positions, never more.
	if n := len(a.marks); n > 0 && now.Sub(a.marks[n-1].at) < a.retain/markBuckets {
		a.marks[n-1].lsn = lsn
		return
	}
	if len(a.marks) == maxMarks {
		a.trailing = a.marks[0].lsn
		a.marks = a.marks[1:]
	}
	a.marks = append(a.marks, mark{at: now, lsn: lsn})
}

// safe returns the position to confirm at now: the newest handed-off
// position, or with retain the newest one handed off at least retain ago;
// never below the session's floor.
func (a *acker) safe(now time.Time) uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.retain <= 0 {
		return max(a.floor, a.handed)
	}
	cut := now.Add(-a.retain)
	i := 0
	for i < len(a.marks) && !a.marks[i].at.After(cut) {
		a.trailing = a.marks[i].lsn
		i++
	}
	if i > 0 {
		a.marks = append(a.marks[:0], a.marks[i:]...)
	}
	return max(a.floor, a.trailing)
}

// untrailed returns the newest handed-off position, ignoring retain.
func (a *acker) untrailed() uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return max(a.floor, a.handed)
}

// handedOff returns the end and commit LSN of the newest hand-off.
func (a *acker) handedOff() (end, commit uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.handed, a.handedCommit
}
