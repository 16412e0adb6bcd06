package engineio

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"strings"
	"testing"

	"github.com/coder/websocket"
)

// countingConn records every Write that reaches the wire.
type countingConn struct {
	net.Conn
	writes [][]byte
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.writes = append(c.writes, append([]byte(nil), p...))
	return len(p), nil
}

// TestAppendFrameHeader pins the frame header for each length encoding
// (RFC 6455 §5.2): FIN set, no mask, 7-bit, 16-bit and 64-bit lengths.
func TestAppendFrameHeader(t *testing.T) {
	for _, tc := range []struct {
		op     byte
		n      int
		header string
	}{
		{opText, 0, "8100"},
		{opText, 5, "8105"},
		{opText, 125, "817d"},
		{opText, 126, "817e007e"},
		{opBinary, 65535, "827effff"},
		{opBinary, 65536, "827f0000000000010000"},
	} {
		payload := bytes.Repeat([]byte{'x'}, tc.n)
		got := appendFrame(nil, tc.op, payload)
		h := hex.EncodeToString(got[:len(got)-tc.n])
		if h != tc.header || !bytes.Equal(got[len(got)-tc.n:], payload) {
			t.Errorf("op %d, %d bytes: header %s, want %s", tc.op, tc.n, h, tc.header)
		}
	}
}

// TestWriteFramesOneWrite: a batch reaches the connection as one write, in
// order; once a close frame has gone out through Write, no data frame
// follows it.
func TestWriteFramesOneWrite(t *testing.T) {
	under := &countingConn{}
	b := &batchConn{Conn: under}
	if _, err := b.Write([]byte{0x8a, 0}); err != nil { // a pong, as coder/websocket writes it
		t.Fatal(err)
	}
	if err := b.writeFrames([]Packet{{Data: []byte("4a")}, {Data: []byte("4bb")}, {Data: []byte{1, 2}, Binary: true}}); err != nil {
		t.Fatal(err)
	}
	want := "\x81\x024a" + "\x81\x034bb" + "\x82\x02\x01\x02"
	if len(under.writes) != 2 || string(under.writes[1]) != want {
		t.Fatalf("writes %q, want the pong then %q", under.writes, want)
	}
	if _, err := b.Write([]byte{0x88, 2, 0x03, 0xe8}); err != nil { // close 1000
		t.Fatal(err)
	}
	if err := b.writeFrames([]Packet{{Data: []byte("4late")}}); !errors.Is(err, net.ErrClosed) {
		t.Errorf("a data frame after the close frame: err %v", err)
	}
	if len(under.writes) != 3 {
		t.Errorf("%d writes, want 3: nothing after the close frame", len(under.writes))
	}
}

// TestFramesReadByClient: coder/websocket's client reads the frames the
// writer makes, at every length encoding, text and binary.
func TestFramesReadByClient(t *testing.T) {
	ts := newTestServer(t, Config{MaxPayload: 1 << 20})
	ws := ts.dial(t, "EIO=4&transport=websocket")
	ws.SetReadLimit(1 << 20)
	read(t, ws)
	for _, n := range []int{0, 1, 124, 125, 126, 65534, 65535, 65536, 200_000} {
		text := strings.Repeat("t", n)
		write(t, ws, "4"+text)
		if typ, m := read(t, ws); typ != websocket.MessageText || m != "4"+text {
			t.Fatalf("text echo of %d bytes: type %v, %d bytes", n, typ, len(m))
		}
		bin := bytes.Repeat([]byte{0xfe}, n)
		if err := ws.Write(context.Background(), websocket.MessageBinary, bin); err != nil {
			t.Fatal(err)
		}
		if typ, m := read(t, ws); typ != websocket.MessageBinary || m != string(bin) {
			t.Fatalf("binary echo of %d bytes: type %v, %d bytes", n, typ, len(m))
		}
	}
}

// discardConn accepts every write.
type discardConn struct{ net.Conn }

func (discardConn) Write(p []byte) (int, error) { return len(p), nil }

// BenchmarkWriteFrames frames a drained batch of 16 Socket.IO event packets
// and writes it in one write: the writer's work per batch, less the system
// call. The frame buffer is pooled, so allocs/op must stay 0.
func BenchmarkWriteFrames(b *testing.B) {
	bc := &batchConn{Conn: discardConn{}}
	frame := []byte(`42["event:updated",{"event_id":"6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b","event_title":"Swimming"},"0/1A2B3C4:0"]`)
	batch := make([]Packet, 16)
	for i := range batch {
		batch[i] = Packet{Data: frame}
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := bc.writeFrames(batch); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(batch)), "ns/frame")
}

// TestWriteNowThenRest: of a batch larger than the socket buffer, writeNowLocked
// writes what the kernel takes without waiting, and the rest follows whole
// and in order (as writeTurn's goroutine writes it).
func TestWriteNowThenRest(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	client, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	bc := newBatchConn(server)
	if bc.fd < 0 {
		t.Fatal("a TCP connection has a descriptor")
	}
	payload := bytes.Repeat([]byte("0123456789abcdef"), 1<<20) // 16 MiB, one frame
	got := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(io.LimitReader(client, int64(len(payload)+10)))
		got <- b
	}()
	bufp := frameBatch([]Packet{{Data: payload, Binary: true}})
	bc.mu.Lock()
	n, err := bc.writeNowLocked(*bufp)
	if err != nil {
		t.Fatal(err)
	}
	if n == 0 || n >= len(*bufp) {
		t.Errorf("writeNowLocked wrote %d of %d bytes, want part of them", n, len(*bufp))
	}
	if _, err := bc.Conn.Write((*bufp)[n:]); err != nil {
		t.Fatal(err)
	}
	bc.mu.Unlock()
	b := <-got
	if len(b) != len(payload)+10 || !bytes.Equal(b[10:], payload) || b[0] != 0x82 || b[1] != 127 {
		t.Fatalf("read %d bytes (header % x), want a 10-byte header and the payload", len(b), b[:min(10, len(b))])
	}
}
