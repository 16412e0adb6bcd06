package gateway

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/koordi/koordi-realtime/schema"
)

// BenchmarkPublishWhileCatchingUp publishes one event to a room of 100 live
// sockets while 200 others catch up, over and over, through a window of
// 50,000 events none of which is theirs — what a node sees when the sockets
// of a failed node reconnect to it with recovery: each of their chunks walks
// the window. ns/op is what one Publish costs meanwhile; catchups/s how many
// catch-ups finished meanwhile.
func BenchmarkPublishWhileCatchingUp(b *testing.B) {
	const (
		windowEvents = 50_000
		live         = 100
		catching     = 200
	)
	g := newTestGateway(b, Config{ReplayMaxEvents: 1 << 20, ReplayMaxBytes: 1 << 30, ReplayWindow: time.Hour})
	ctx := context.Background()
	payload := json.RawMessage(`{"event_id":"6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b","event_title":"Swimming"}`)
	other, liveRoom, theirs := schema.CalendarRoom(uuid(1)), schema.CalendarRoom(uuid(2)), schema.CalendarRoom(uuid(3))
	lsn := uint64(0)
	publish := func(room string) {
		lsn++
		tx := schema.Transaction{CommitLSN: lsn, Events: []schema.Envelope{{Offset: off(lsn, 0), Room: room, Event: schema.EventCreated, Data: payload}}}
		if err := g.Publish(ctx, tx); err != nil {
			b.Fatal(err)
		}
	}
	start := g.window.position()
	for range windowEvents {
		publish(other)
	}
	for i := range live {
		attach(g, uuid(100+i), &countConn{}, liveRoom)
	}
	clients := make([]*client, catching)
	for i := range clients {
		clients[i] = attach(g, uuid(1000+i), &countConn{}, theirs)
	}
	// lag sends c, once it is live, back to the window's start: it
	// catches up again. It reports whether c had finished its catch-up.
	lag := func(c *client) bool {
		g.pubMu.Lock()
		defer g.pubMu.Unlock()
		g.idx.mu.Lock()
		defer g.idx.mu.Unlock()
		if c.lagging {
			return false
		}
		c.lagging = true
		g.idx.suspend(c)
		c.sent = start
		g.startCatchUp(c)
		return true
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var finished int
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			for _, c := range clients {
				select {
				case <-stop:
					return
				default:
				}
				if lag(c) {
					finished++
				}
			}
			time.Sleep(time.Millisecond)
		}
	}()
	b.ResetTimer()
	for range b.N {
		publish(liveRoom)
	}
	b.StopTimer()
	close(stop)
	wg.Wait()
	b.ReportMetric(float64(finished)/b.Elapsed().Seconds(), "catchups/s")
}
