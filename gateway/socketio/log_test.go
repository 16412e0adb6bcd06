package socketio

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/koordi/koordi-realtime/gateway/engineio"
)

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// badAckHandler acks with an argument JSON cannot encode, which is logged.
type badAckHandler struct {
	recHandler
	acked chan struct{}
}

func (h *badAckHandler) Event(s *Socket, event string, args []json.RawMessage, ack func(args ...any)) {
	ack(make(chan int))
	close(h.acked)
}

// TestLogsNoSID: neither the engine session id (a credential) nor the
// socket id appears in socketio's log lines; the engine connection's
// sid_hash does, as in engineio's lines.
func TestLogsNoSID(t *testing.T) {
	var out lockedBuffer
	logger := slog.New(slog.NewTextHandler(&out, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s := NewServer(Config{Config: engineio.Config{PingInterval: time.Minute, PingTimeout: time.Minute, Logger: logger}})
	h := &badAckHandler{recHandler: *newRecHandler(), acked: make(chan struct{})}
	s.Handle("/", h)
	hs := httptest.NewServer(s)
	defer hs.Close()
	defer s.Shutdown(context.Background())

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(hs.URL, "http")+"/socket.io/?EIO=4&transport=websocket", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	cl := &wsClient{t, ws}
	open := cl.read()
	var o struct{ SID string }
	if err := json.Unmarshal([]byte(open[1:]), &o); err != nil || o.SID == "" {
		t.Fatalf("open %q: %v", open, err)
	}
	socketID := cl.connect("40")
	cl.send(`421["x"]`)
	recv(t, h.acked)

	logs := out.String()
	if !strings.Contains(logs, "ack not sent") {
		t.Fatalf("no ack line in:\n%s", logs)
	}
	for _, id := range []string{o.SID, socketID} {
		if strings.Contains(logs, id) {
			t.Errorf("id %s logged:\n%s", id, logs)
		}
	}
	sum := sha256.Sum256([]byte(o.SID))
	if hash := hex.EncodeToString(sum[:4]); !strings.Contains(logs, "ack not sent\" sid_hash="+hash) {
		t.Errorf("no sid_hash=%s on the ack line:\n%s", hash, logs)
	}
}
