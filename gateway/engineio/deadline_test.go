package engineio

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// deadlineServer serves s and reports each return of its ServeHTTP.
func deadlineServer(t *testing.T, cfg Config, wrap ...func(*recHandler) Handler) (*testServer, chan string) {
	t.Helper()
	h := newRecHandler()
	h.noEcho = true
	var handler Handler = h
	for _, f := range wrap {
		handler = f(h)
	}
	s := NewServer(cfg, handler)
	returned := make(chan string, 100)
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.ServeHTTP(w, r)
		returned <- r.Method
	}))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.Shutdown(ctx)
		hs.CloseClientConnections()
		hs.Close()
	})
	return &testServer{Server: s, h: h, url: hs.URL + "/engine.io/"}, returned
}

// TestTrickledPostBody: a polling POST body is read within PingTimeout; a
// client trickling it is answered 400, its session closed and its
// connection closed, instead of holding both for as long as it trickles.
func TestTrickledPostBody(t *testing.T) {
	ts, returned := deadlineServer(t, Config{PingInterval: time.Minute, PingTimeout: 300 * time.Millisecond})
	sid := ts.handshake(t)
	<-returned
	conn, err := net.Dial("tcp", strings.TrimPrefix(ts.url[:strings.Index(ts.url, "/engine.io/")], "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	start := time.Now()
	if _, err := io.WriteString(conn, "POST /engine.io/?EIO=4&transport=polling&sid="+sid+" HTTP/1.1\r\nHost: x\r\n"+
		"Content-Type: text/plain\r\nContent-Length: 1000\r\n\r\n4"); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	trickled := make(chan struct{})
	go func() { // a byte every 20 ms: 20 s for the body
		defer close(trickled)
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			if _, err := conn.Write([]byte("x")); err != nil {
				return
			}
		}
	}()
	defer func() { close(stop); <-trickled }()

	_ = conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer while trickling (after %v): %v", time.Since(start), err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("trickled POST answered %d, want 400", resp.StatusCode)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("answered after %v, want about PingTimeout (300ms)", d)
	}
	select {
	case m := <-returned:
		if m != "POST" {
			t.Errorf("returned %s", m)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("the POST handler still runs")
	}
	// The connection is not kept for another request: what the client
	// still sends is not read as one.
	if _, err := io.ReadAll(conn); err != nil && !strings.Contains(err.Error(), "reset") {
		t.Errorf("connection not closed: %v", err)
	}
	if r := ts.h.waitClose(t); r != ReasonTransportError {
		t.Errorf("session closed with %q", r)
	}
}

// slowHandler takes longer than the POST read deadline over each message.
type slowHandler struct{ *recHandler }

func (h slowHandler) Message(c *Conn, data []byte, binary bool) {
	time.Sleep(300 * time.Millisecond)
	h.recHandler.Message(c, data, binary)
}

// TestPostAfterDeadlineKeepAlive: a POST read in time leaves no deadline
// behind on its keep-alive connection, even when its handler outlasts it
// (net/http reads behind a handler; were the deadline still set there, its
// expiry would cancel the connection's next requests): the long-polling
// GET that follows on the same connection waits longer than PingTimeout
// and gets its answer.
func TestPostAfterDeadlineKeepAlive(t *testing.T) {
	ts, returned := deadlineServer(t, Config{PingInterval: time.Minute, PingTimeout: 100 * time.Millisecond},
		func(h *recHandler) Handler { return slowHandler{h} })
	sid := ts.handshake(t)
	<-returned
	c := <-ts.h.opened
	client := &http.Client{Transport: &http.Transport{MaxConnsPerHost: 1}}
	defer client.CloseIdleConnections()
	resp, err := client.Post(ts.url+"?EIO=4&transport=polling&sid="+sid, "text/plain", strings.NewReader("4hello"))
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	<-returned
	time.AfterFunc(400*time.Millisecond, func() { c.SendText([]byte("4late")) })
	resp, err = client.Get(ts.url + "?EIO=4&transport=polling&sid=" + sid)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "4late" {
		t.Errorf("GET on the POST's connection: %d %q", resp.StatusCode, b)
	}
}

// TestUnreadPollAnswer: a GET answer the client does not read is written
// within PingInterval+PingTimeout (the time a silent session lives), then
// its connection is dropped, so that the handler does not block forever.
func TestUnreadPollAnswer(t *testing.T) {
	ts, returned := deadlineServer(t, Config{PingInterval: 200 * time.Millisecond, PingTimeout: 200 * time.Millisecond})
	sid := ts.handshake(t)
	<-returned
	c := <-ts.h.opened
	frame := []byte("4" + strings.Repeat("x", 8<<10))
	for range 2048 { // 16 MiB: more than the socket buffers take
		c.SendText(frame)
	}
	conn, err := net.Dial("tcp", strings.TrimPrefix(ts.url[:strings.Index(ts.url, "/engine.io/")], "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.(*net.TCPConn).SetReadBuffer(4096)
	if _, err := io.WriteString(conn, "GET /engine.io/?EIO=4&transport=polling&sid="+sid+" HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-returned:
		if m != "GET" {
			t.Errorf("returned %s", m)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("the GET handler still writes to a client that does not read")
	}
}
