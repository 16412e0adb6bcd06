package conformance

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func start(t *testing.T) string {
	t.Helper()
	s := New(Config{})
	hs := httptest.NewServer(s)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Error(err)
		}
		hs.Close()
	})
	return hs.URL
}

func dial(t *testing.T, url string) *websocket.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(url, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ws.CloseNow() })
	return ws
}

func read(t *testing.T, ws *websocket.Conn) (websocket.MessageType, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	typ, b, err := ws.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return typ, string(b)
}

func TestHandshakeTimings(t *testing.T) {
	url := start(t)
	for _, path := range []string{"/engine.io/", "/socket.io/"} {
		resp, err := http.Get(url + path + "?EIO=4&transport=polling")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var open map[string]any
		if err := json.Unmarshal(b[1:], &open); err != nil {
			t.Fatal(err)
		}
		if open["pingInterval"] != 300.0 || open["pingTimeout"] != 200.0 || open["maxPayload"] != 1e6 {
			t.Errorf("%s: open packet %s", path, b)
		}
	}
	resp, err := http.Get(url + "/engine.io/?EIO=4&transport=polling")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	req, _ := http.NewRequest("GET", url+"/socket.io/?EIO=4&transport=polling", nil)
	req.Header.Set("Origin", "http://anywhere.example")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.Header.Get("Access-Control-Allow-Origin") != "http://anywhere.example" {
		t.Errorf("CORS: %v", resp.Header)
	}
}

func TestEngineEcho(t *testing.T) {
	ws := dial(t, start(t)+"/engine.io/?EIO=4&transport=websocket")
	read(t, ws)
	_ = ws.Write(context.Background(), websocket.MessageText, []byte("4hello"))
	if _, m := read(t, ws); m != "4hello" {
		t.Errorf("text echo %q", m)
	}
	_ = ws.Write(context.Background(), websocket.MessageBinary, []byte{1, 2, 3, 4})
	if typ, m := read(t, ws); typ != websocket.MessageBinary || m != "\x01\x02\x03\x04" {
		t.Errorf("binary echo %v %q", typ, m)
	}
}

func TestSocketEcho(t *testing.T) {
	url := start(t)
	ws := dial(t, url+"/socket.io/?EIO=4&transport=websocket")
	read(t, ws)
	send := func(s string) { _ = ws.Write(context.Background(), websocket.MessageText, []byte(s)) }
	send(`40/custom,{"token":"abc"}`)
	if _, m := read(t, ws); !strings.HasPrefix(m, `40/custom,{"sid":`) {
		t.Errorf("connect reply %q", m)
	}
	if _, m := read(t, ws); m != `42/custom,["auth",{"token":"abc"}]` {
		t.Errorf("auth %q", m)
	}
	send("40")
	read(t, ws)
	if _, m := read(t, ws); m != `42["auth",{}]` {
		t.Errorf("auth %q", m)
	}
	send(`42["message",1,"2",{"3":[true]}]`)
	if _, m := read(t, ws); m != `42["message-back",1,"2",{"3":[true]}]` {
		t.Errorf("echo %q", m)
	}
	send(`451-789["message-with-ack",{"_placeholder":true,"num":0},"x"]`)
	_ = ws.Write(context.Background(), websocket.MessageBinary, []byte{1, 2, 3})
	if _, m := read(t, ws); m != `461-789[{"_placeholder":true,"num":0},"x"]` {
		t.Errorf("binary ack %q", m)
	}
	if typ, m := read(t, ws); typ != websocket.MessageBinary || m != "\x01\x02\x03" {
		t.Errorf("attachment %v %q", typ, m)
	}
}
