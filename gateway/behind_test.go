package gateway

import (
	"context"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/koordi/koordi-realtime/schema"
)

// TestPublishBehindHoldsUntilCurrent: while the stream says it is behind,
// a socket's frames wait for the batches after, and reach it in one
// OfferFrames call, in order, once a batch comes that is not behind.
func TestPublishBehindHoldsUntilCurrent(t *testing.T) {
	g := newTestGateway(t, Config{})
	calA := schema.CalendarRoom(uuid(0xA))
	alice := &memConn{}
	attach(g, uuid(1), alice, calA)
	ctx := context.Background()
	for i, behind := range []bool{true, true, false} {
		lsn := uint64(100 * (i + 1))
		if err := g.PublishBehind(ctx, []schema.Transaction{tx(lsn, env(calA, "e", string(rune('1'+i))))}, behind); err != nil {
			t.Fatal(err)
		}
		if behind && len(alice.got()) != 0 {
			t.Fatalf("after batch %d (behind): alice got %d frames already", i+1, len(alice.got()))
		}
	}
	if got := payloadsOf(alice); got != "1,2,3" {
		t.Fatalf("alice got %s, want 1,2,3", got)
	}
	alice.mu.Lock()
	calls := alice.calls
	alice.mu.Unlock()
	if calls != 1 {
		t.Fatalf("%d OfferFrames calls for three held batches, want 1", calls)
	}
	if got := testutil.ToFloat64(g.metrics.messagesSent); got != 3 {
		t.Fatalf("messages sent = %v, want 3", got)
	}
}

// TestPublishBehindReleasedWhenTheStreamStops: a stream that said it was
// behind and then sent nothing more (its connection lost) does not keep
// the frames: they are queued after maxHold.
func TestPublishBehindReleasedWhenTheStreamStops(t *testing.T) {
	g := newTestGateway(t, Config{})
	calA := schema.CalendarRoom(uuid(0xA))
	alice := &memConn{}
	attach(g, uuid(1), alice, calA)
	if err := g.PublishBehind(context.Background(), []schema.Transaction{tx(100, env(calA, "e", "1"))}, true); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the held frame queued", func() bool { return payloadsOf(alice) == "1" })
}

// TestResetReleasesHeldFramesFirst: events published before a gap reach
// the sockets before its sync:reset, held or not; so does a membership
// load, which queues what was owed under the old rooms.
func TestResetReleasesHeldFramesFirst(t *testing.T) {
	g := newTestGateway(t, Config{})
	calA := schema.CalendarRoom(uuid(0xA))
	alice := &memConn{}
	attach(g, uuid(1), alice, calA)
	ctx := context.Background()
	if err := g.PublishBehind(ctx, []schema.Transaction{tx(100, env(calA, "e", "1"))}, true); err != nil {
		t.Fatal(err)
	}
	g.Reset("publication_changed", nil)
	got := alice.got()
	if len(got) != 2 || !strings.Contains(string(got[0]), `"e"`) || !strings.Contains(string(got[1]), schema.SyncReset) {
		t.Fatalf("alice got %q, want the event, then sync:reset", got)
	}

	if err := g.PublishBehind(ctx, []schema.Transaction{tx(200, env(calA, "e", "2"))}, true); err != nil {
		t.Fatal(err)
	}
	// The snapshot no longer has alice in calA: what was owed before it
	// is queued all the same.
	g.LoadMemberships(members(map[string][]string{}))
	if got := alice.got(); len(got) != 3 || !strings.Contains(string(got[2]), `"e"`) {
		t.Fatalf("alice got %q after the membership load, want the held event third", got)
	}
}
