package wsbatch

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha1"
	"encoding/base64"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/coder/websocket"
)

// TestAppendFrameReadByCoderWebsocket checks the encoder against a real
// client: frames of every length class arrive intact.
func TestAppendFrameReadByCoderWebsocket(t *testing.T) {
	payloads := [][]byte{[]byte(""), []byte("42[\"x\"]"), bytes.Repeat([]byte("a"), 125), bytes.Repeat([]byte("b"), 126),
		bytes.Repeat([]byte("c"), 70_000)}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn := hijackUpgrade(t, w, r)
		defer conn.Close()
		var buf []byte
		for _, p := range payloads {
			buf = AppendFrame(buf, p)
		}
		if _, err := conn.Write(buf); err != nil {
			t.Error(err)
		}
		_, _ = io.Copy(io.Discard, conn) // until the client closes
	}))
	defer srv.Close()
	c, _, err := websocket.Dial(context.Background(), "ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	c.SetReadLimit(1 << 20)
	for i, want := range payloads {
		typ, got, err := c.Read(context.Background())
		if err != nil || typ != websocket.MessageText || !bytes.Equal(got, want) {
			t.Fatalf("frame %d: type %v, %d bytes, %v; want %d bytes", i, typ, len(got), err, len(want))
		}
	}
}

// hijackUpgrade answers a WebSocket handshake by hand and returns the raw
// connection (no extensions negotiated).
func hijackUpgrade(tb testing.TB, w http.ResponseWriter, r *http.Request) net.Conn {
	h := sha1.Sum([]byte(r.Header.Get("Sec-WebSocket-Key") + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		tb.Fatal(err)
	}
	_, _ = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " +
		base64.StdEncoding.EncodeToString(h[:]) + "\r\n\r\n")
	if err := brw.Flush(); err != nil {
		tb.Fatal(err)
	}
	return conn
}

// BenchmarkBatchOf16 sends batches of 16 Socket.IO-sized event frames to a
// reading client over loopback: "per-frame" as gateway/engineio.writeBatch
// does (coder/websocket Write per packet), "one-write" with the frames
// encoded into one buffer and written once. ns/op is per frame.
func BenchmarkBatchOf16(b *testing.B) {
	payload := []byte(`42["event:updated",{"event_id":"00000000-0001-4000-a000-000000000005","event_title":"bench:1732590000123456789","event_calendar_id":"00000000-0000-4000-9000-000000000005","changed":["title"]},"000000000169A3F8-0002"]`)
	const batch = 16
	run := func(b *testing.B, serve func(w http.ResponseWriter, r *http.Request, frames int)) {
		frames := b.N
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { serve(w, r, frames) }))
		defer srv.Close()
		conn, err := net.Dial("tcp", strings.TrimPrefix(srv.URL, "http://"))
		if err != nil {
			b.Fatal(err)
		}
		defer conn.Close()
		_, _ = io.WriteString(conn, "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
		br := bufio.NewReaderSize(conn, 64<<10)
		resp, err := http.ReadResponse(br, nil)
		if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
			b.Fatalf("handshake: %v %v", resp, err)
		}
		b.ReportAllocs()
		b.SetBytes(int64(len(payload)))
		b.ResetTimer()
		frameLen := len(AppendFrame(nil, payload))
		for i := 0; i < frames; i++ {
			if _, err := br.Discard(frameLen); err != nil {
				b.Fatalf("frame %d: %v", i, err)
			}
		}
	}
	b.Run("per-frame", func(b *testing.B) {
		run(b, func(w http.ResponseWriter, r *http.Request, frames int) {
			c, err := websocket.Accept(w, r, nil)
			if err != nil {
				return
			}
			defer c.CloseNow()
			for sent := 0; sent < frames; sent += batch {
				for k := 0; k < batch && sent+k < frames; k++ {
					if err := c.Write(context.Background(), websocket.MessageText, payload); err != nil {
						return
					}
				}
			}
		})
	})
	b.Run("one-write", func(b *testing.B) {
		run(b, func(w http.ResponseWriter, r *http.Request, frames int) {
			conn := hijackUpgrade(b, w, r)
			defer conn.Close()
			var buf []byte
			for sent := 0; sent < frames; sent += batch {
				buf = buf[:0]
				for k := 0; k < batch && sent+k < frames; k++ {
					buf = AppendFrame(buf, payload)
				}
				if _, err := conn.Write(buf); err != nil {
					return
				}
			}
		})
	})
}
