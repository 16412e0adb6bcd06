package feed

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Message headers of the feed.
const (
	headerCommit = "Koordi-Commit" // commit LSN, 16 hex digits
	headerPrev   = "Koordi-Prev"   // offset of the last event before the message's first
	headerLast   = "Koordi-Last"   // offset of the message's last event
	headerReset  = "Koordi-Reset"  // a gap in the stream: its reason
	headerPart   = "Koordi-Part"   // "i/n": part i of a message cut in n (an event over max_payload)
)

// parsePart reads a Koordi-Part header: 1 <= i <= n.
func parsePart(v string) (i, n int, ok bool) {
	a, b, found := strings.Cut(v, "/")
	if !found {
		return 0, 0, false
	}
	i, err1 := strconv.Atoi(a)
	n, err2 := strconv.Atoi(b)
	if err1 != nil || err2 != nil || i < 1 || i > n {
		return 0, 0, false
	}
	return i, n, true
}

// Subject is the stream's one subject.
func Subject(stream string) string { return stream + ".tx" }

// StreamConfig is what EnsureStream sets.
type StreamConfig struct {
	Name string
	// ReplayWindow is the service's REPLAY_WINDOW: messages are kept
	// longer, so a node started late reads the window from the stream.
	ReplayWindow time.Duration
	// Replicas of the stream on a NATS cluster; default 1.
	Replicas int
}

// EnsureStream creates the stream or updates it to cfg.
func EnsureStream(ctx context.Context, js jetstream.JetStream, cfg StreamConfig) (jetstream.Stream, error) {
	maxAge := max(2*cfg.ReplayWindow, 10*time.Minute)
	s, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        cfg.Name,
		Description: "koordi-realtime: committed transactions from the replication slot's leader to every node",
		Subjects:    []string{Subject(cfg.Name)},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		MaxAge:      maxAge,
		// Covers a takeover: a new leader decodes up to the replay window
		// again (it skips what the stream holds; this is the second line).
		Duplicates: min(maxAge, max(cfg.ReplayWindow, 2*time.Minute)),
		Replicas:   max(cfg.Replicas, 1),
	})
	if err != nil {
		return nil, fmt.Errorf("create or update stream %s: %w", cfg.Name, err)
	}
	return s, nil
}
