package cdc

import "sync"

// queueBudget bounds the bytes of decoded transactions held in memory
// between the stream goroutine and the delivery goroutine, beside the
// queue's bound on their number: a transaction is held in memory up to
// Config.SpillBytes, so the count alone would let the queue hold
// queueLen × SpillBytes. One transaction always fits when nothing is
// queued, whatever its size.
type queueBudget struct {
	limit int
	mu    sync.Mutex
	used  int
	freed chan struct{} // a token after each release (capacity 1)
}

func newQueueBudget(limit int) *queueBudget {
	return &queueBudget{limit: limit, freed: make(chan struct{}, 1)}
}

// take reserves n bytes if they fit, and reports whether they did. A
// spilled transaction (n = 0) always fits.
func (b *queueBudget) take(n int) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if n > 0 && b.used > 0 && b.used+n > b.limit {
		return false
	}
	b.used += n
	return true
}

// give returns n bytes taken earlier and wakes a waiting take.
func (b *queueBudget) give(n int) {
	if n == 0 {
		return
	}
	b.mu.Lock()
	b.used -= n
	b.mu.Unlock()
	select {
	case b.freed <- struct{}{}:
	default:
	}
}
