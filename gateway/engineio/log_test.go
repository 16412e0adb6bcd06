package engineio

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"log"
	"log/slog"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// lockedBuffer is a log sink written by several goroutines.
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

// TestLogsNoSID: a session id is a credential (whoever knows it can poll
// the session's messages and post as its client), so no log line carries
// it, at debug level either; lines carry sid_hash, the first 8 hex digits
// of its SHA-256, which correlates lines without revealing it.
func TestLogsNoSID(t *testing.T) {
	var out lockedBuffer
	h := panicHandler{newRecHandler()}
	s := NewServer(Config{
		PingInterval: time.Minute, PingTimeout: time.Minute,
		Logger: slog.New(slog.NewTextHandler(&out, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}, h)
	hs := httptest.NewUnstartedServer(s)
	hs.Config.ErrorLog = log.New(io.Discard, "", 0)
	hs.Start()
	defer hs.Close()
	defer s.Shutdown(context.Background())
	ts := &testServer{Server: s, h: h.recHandler, url: hs.URL + "/engine.io/"}

	// A polling session upgraded to WebSocket, whose handler then panics
	// (the reader logs the panic).
	polled := ts.handshake(t)
	ws := ts.dial(t, "EIO=4&transport=websocket&sid="+polled)
	write(t, ws, "2probe")
	if _, m := read(t, ws); m != "3probe" {
		t.Fatalf("probe answer %q", m)
	}
	write(t, ws, "5")
	write(t, ws, "4panic")
	readErr(t, ws)
	h.waitClose(t)

	// A WebSocket session the client closes.
	ws = ts.dial(t, "EIO=4&transport=websocket")
	_, open := read(t, ws)
	direct := parseOpen(t, open).SID
	ws.CloseNow()
	h.waitClose(t)

	// A polling session whose client sends a close packet.
	closed := ts.handshake(t)
	ts.post(t, closed, "1")
	h.waitClose(t)

	waitFor(t, func() bool { return strings.Count(out.String(), "engine.io session closed") == 3 })
	logs := out.String()
	for _, want := range []string{"engine.io session opened", "engine.io session upgraded", "engine.io handler panicked"} {
		if !strings.Contains(logs, want) {
			t.Errorf("no %q line in:\n%s", want, logs)
		}
	}
	for _, sid := range []string{polled, direct, closed} {
		if strings.Contains(logs, sid) {
			t.Errorf("sid %s logged:\n%s", sid, logs)
		}
		sum := sha256.Sum256([]byte(sid))
		hash := hex.EncodeToString(sum[:4])
		if !strings.Contains(logs, "sid_hash="+hash) {
			t.Errorf("no sid_hash=%s for sid %s in:\n%s", hash, sid, logs)
		}
	}
}

// TestLogAttrPrintsHash: formatted outside slog, the attribute shows the
// hash, not the sid.
func TestLogAttrPrintsHash(t *testing.T) {
	c := &Conn{id: "SCQYYYGPWMV7WXEBMBP7HM5WCL"}
	for _, got := range []string{c.LogAttr().String(), c.LogAttr().Value.String(), c.LogAttr().Value.Resolve().String()} {
		if got != "sid_hash="+SIDHash(c.id) && got != SIDHash(c.id) {
			t.Errorf("printed %q", got)
		}
	}
}
