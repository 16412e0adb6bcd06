package gateway

import (
	"context"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/koordi/koordi-realtime/schema"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata/")

// TestMetricsExposition compares the exposition of the gateway's series
// after a refused and an accepted connect with testdata/metrics.golden.
func TestMetricsExposition(t *testing.T) {
	reg := prometheus.NewRegistry()
	s := startServer(t, Config{Registerer: reg})
	bad := dialRaw(t, s.url, map[string]any{"token": "x.y.z"})
	if m, err := bad.read(); err != nil || !strings.HasPrefix(m, `44{"message":"Authentication error: invalid token"}`) {
		t.Fatalf("refusal %q, %v", m, err)
	}
	user := uuid(0x71)
	s.setMembers(user, uuid(0x72))
	c := dialRaw(t, s.url, map[string]any{"token": s.token(t, user, time.Hour)})
	c.connected()
	// The reply can be read before Connected has joined the rooms.
	deadline := time.Now().Add(waitFor)
	for s.liveRooms() != 2 {
		if time.Now().After(deadline) {
			t.Fatalf("rooms = %d, want 2", s.liveRooms())
		}
		time.Sleep(5 * time.Millisecond)
	}

	// One event to the user's room, published twice: one message sent, one
	// dropped as a duplicate, one event in the replay window.
	offs := s.publish(t, env(schema.UserRoom(user), "e", `{}`))
	if m, err := c.read(); err != nil || !strings.HasPrefix(m, `42["e"`) {
		t.Fatalf("event %q, %v", m, err)
	}
	again, err := schema.ParseOffset(offs[0])
	if err != nil {
		t.Fatal(err)
	}
	dup := env(schema.UserRoom(user), "e", `{}`)
	dup.Offset = again
	if err := s.g.Publish(context.Background(), schema.Transaction{Events: []schema.Envelope{dup}}); err != nil {
		t.Fatal(err)
	}

	names := []string{
		"koordi_gateway_auth_failures_total",
		"koordi_gateway_connected_sockets",
		"koordi_gateway_rooms",
		"koordi_gateway_replay_hits_total",
		"koordi_gateway_replay_misses_total",
		"koordi_gateway_replayed_messages_total",
		"koordi_gateway_slow_consumer_disconnects_total",
		"koordi_gateway_messages_sent_total",
		"koordi_gateway_messages_dropped_total",
		"koordi_gateway_rate_limited_events_total",
	}
	golden := filepath.Join("testdata", "metrics.golden")
	if *update {
		var b strings.Builder
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			for _, n := range names {
				if mf.GetName() == n {
					if err := writeText(&b, mf); err != nil {
						t.Fatal(err)
					}
				}
			}
		}
		if err := os.WriteFile(golden, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	f, err := os.Open(golden)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := testutil.GatherAndCompare(reg, f, names...); err != nil {
		t.Fatal(err)
	}
}

func (s *testServer) liveRooms() int {
	s.g.idx.mu.RLock()
	defer s.g.idx.mu.RUnlock()
	return len(s.g.idx.rooms)
}
