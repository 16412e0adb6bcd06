package socketio

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/koordi/koordi-realtime/gateway/engineio"
)

// binaryHeader is the text of a BINARY_EVENT announcing n attachments.
func binaryHeader(n int) string {
	var b strings.Builder
	b.WriteString("45")
	b.WriteString(strconv.Itoa(n))
	b.WriteString(`-["message"`)
	for i := range n {
		b.WriteString(`,{"_placeholder":true,"num":` + strconv.Itoa(i) + `}`)
	}
	b.WriteString("]")
	return b.String()
}

// pollingSession opens a raw polling session and returns its sid.
func (ts *testServer) pollingSession(t *testing.T) string {
	t.Helper()
	resp, err := http.Get(ts.url + "?EIO=4&transport=polling")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var open struct{ SID string }
	if err := json.Unmarshal(b[1:], &open); err != nil {
		t.Fatalf("handshake %q: %v", b, err)
	}
	return open.SID
}

func (ts *testServer) rawPost(t *testing.T, sid, body string) int {
	t.Helper()
	resp, err := http.Post(ts.url+"?EIO=4&transport=polling&sid="+sid, "text/plain", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// rawGet polls once, giving up after 2 seconds (a session that is still
// open holds the GET for its ping interval).
func (ts *testServer) rawGet(t *testing.T, sid string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", ts.url+"?EIO=4&transport=polling&sid="+sid, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestBinaryBeforeConnect: a binary packet before the connection has a
// namespace socket closes it as a parse error, buffering nothing, on both
// transports. Such a packet could never be delivered (no socket to take
// it), and its attachments were held until the connect timeout.
func TestBinaryBeforeConnect(t *testing.T) {
	ts := newTestServer(t, Config{})
	for _, header := range []string{binaryHeader(10), binaryHeader(1), `450-["message"]`, `461-0[{"_placeholder":true,"num":0}]`} {
		t.Run("websocket "+header[:5], func(t *testing.T) {
			cl := ts.dial(t)
			cl.send(header)
			cl.closed()
		})
		t.Run("polling "+header[:5], func(t *testing.T) {
			sid := ts.pollingSession(t)
			ts.rawPost(t, sid, header)
			if status, body := ts.rawGet(t, sid); status != 400 {
				t.Fatalf("GET after a binary packet before CONNECT: %d %q, want 400 (session closed)", status, body)
			}
		})
	}
	// After a namespace socket ended, the connection has none again.
	cl := ts.dial(t)
	cl.connect("40")
	cl.read() // auth
	cl.send("41")
	recv(t, ts.h.discon)
	cl.send(binaryHeader(1))
	cl.closed()
}

// TestAttachmentBytesCapped: the attachments of an incomplete packet may
// hold at most MaxAttachmentBytes (default MaxPayload); one more byte
// closes the connection.
func TestAttachmentBytesCapped(t *testing.T) {
	ts := newTestServer(t, Config{Config: engineio.Config{MaxPayload: 1000}})
	cl := ts.dial(t)
	cl.connect("40")
	cl.read()
	cl.send(binaryHeader(2))
	cl.sendBinary(make([]byte, 500))
	cl.sendBinary(make([]byte, 500)) // exactly the cap: delivered
	if e := recv(t, ts.h.events); !strings.HasSuffix(e, " 2") {
		t.Fatalf("event %q", e)
	}
	cl.read()
	cl.read()
	cl.read()
	cl.send(binaryHeader(3))
	cl.sendBinary(make([]byte, 600))
	cl.sendBinary(make([]byte, 401))
	cl.closed()
	if r := recv(t, ts.h.discon); r != "/ parse error" {
		t.Errorf("disconnect %q", r)
	}
	if n := ts.PendingAttachmentBytes(); n != 0 {
		t.Errorf("%d attachment bytes still held", n)
	}

	// The cap is per connection and configurable; polling counts the same.
	ts = newTestServer(t, Config{MaxAttachmentBytes: 10})
	sid := ts.pollingSession(t)
	ts.rawPost(t, sid, "40")
	ts.rawPost(t, sid, binaryHeader(2)+"\x1eb"+base64.StdEncoding.EncodeToString(make([]byte, 6)))
	ts.rawPost(t, sid, "b"+base64.StdEncoding.EncodeToString(make([]byte, 6)))
	if r := recv(t, ts.h.discon); r != "/ parse error" {
		t.Errorf("polling disconnect %q", r)
	}
}

// TestAttachmentDeadline: a packet whose attachments do not all arrive
// within AttachmentTimeout closes the connection.
func TestAttachmentDeadline(t *testing.T) {
	ts := newTestServer(t, Config{AttachmentTimeout: 100 * time.Millisecond})
	cl := ts.dial(t)
	cl.connect("40")
	cl.read()
	// In time: delivered, and the deadline does not outlive the packet.
	cl.send(binaryHeader(1))
	cl.sendBinary([]byte{1})
	recv(t, ts.h.events)
	time.Sleep(200 * time.Millisecond)
	cl.send(`42["message","still here"]`)
	for m := cl.read(); m != `42["message-back","still here"]`; m = cl.read() {
	}
	// Late: closed.
	start := time.Now()
	cl.send(binaryHeader(2))
	cl.sendBinary([]byte{1})
	cl.closed()
	if d := time.Since(start); d < 100*time.Millisecond || d > 2*time.Second {
		t.Errorf("closed after %v, want about 100ms", d)
	}
	if r := recv(t, ts.h.discon); r != "/ parse error" {
		t.Errorf("disconnect %q", r)
	}
}

// TestHostileAttachmentsMemory: connections that announce ten attachments
// before CONNECT and send nine hold nothing: each is closed at the
// announcement, and the heap does not grow by what they sent.
func TestHostileAttachmentsMemory(t *testing.T) {
	const (
		conns = 20
		size  = 64 << 10
	)
	ts := newTestServer(t, Config{Config: engineio.Config{MaxPayload: size}})
	payload := make([]byte, size)
	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	clients := make([]*websocket.Conn, conns)
	for i := range clients {
		clients[i] = ts.dial(t).ws
		_ = clients[i].Write(context.Background(), websocket.MessageText, []byte(binaryHeader(10)))
		for range 9 {
			if clients[i].Write(context.Background(), websocket.MessageBinary, payload) != nil {
				break // closed by the server, as it should
			}
		}
	}
	deadline := time.Now().Add(2 * time.Second)
	for ts.Conns() > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	var after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&after)
	if n := ts.Conns(); n != 0 {
		t.Errorf("%d of %d connections still open", n, conns)
	}
	if n := ts.PendingAttachmentBytes(); n != 0 {
		t.Errorf("%d attachment bytes held", n)
	}
	sent := conns * 9 * size
	if grown := int64(after.HeapAlloc) - int64(before.HeapAlloc); grown > int64(sent/4) {
		t.Errorf("heap grew by %d bytes after %d hostile attachment bytes", grown, sent)
	}
	for _, c := range clients {
		c.CloseNow()
	}
}
