package engineio

import (
	"bufio"
	"net"
	"net/http"
	"sync"
)

// maxKeptBatch is the batch buffer capacity kept between batches; a larger
// one, grown by a burst, is released so idle connections stay small.
const maxKeptBatch = 16 << 10

// batchConn lets the writer put several WebSocket messages on the wire with
// one write(2). coder/websocket flushes its buffer to the connection after
// every message, which made one system call per delivered packet the largest
// cost of fan-out; while a batch is open those flushes land in buf, and end
// writes buf at once. Every write to the connection goes through mu, so a
// control frame written by coder/websocket outside a batch (a pong, a close)
// never interleaves with a batch being written.
type batchConn struct {
	net.Conn
	mu       sync.Mutex
	batching bool
	buf      []byte
}

func (b *batchConn) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.batching {
		b.buf = append(b.buf, p...)
		return len(p), nil
	}
	return b.Conn.Write(p)
}

// begin opens a batch: writes are kept until end.
func (b *batchConn) begin() {
	b.mu.Lock()
	b.batching = true
	b.mu.Unlock()
}

// end writes what the batch kept, in one write, and closes the batch.
func (b *batchConn) end() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.batching = false
	if len(b.buf) == 0 {
		return nil
	}
	_, err := b.Conn.Write(b.buf)
	if cap(b.buf) > maxKeptBatch {
		b.buf = nil
	} else {
		b.buf = b.buf[:0]
	}
	return err
}

// batchingWriter hands coder/websocket a hijacked connection wrapped in a
// batchConn.
type batchingWriter struct {
	http.ResponseWriter
	conn *batchConn
	br   *bufio.Reader // the connection's reader when it is ours, nothing buffered behind it
}

func (w *batchingWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	// net/http flushed the 101 response before handing the connection
	// over, so dropping its writer loses nothing.
	if err := brw.Writer.Flush(); err != nil {
		_ = c.Close()
		return nil, nil, err
	}
	w.conn = &batchConn{Conn: c}
	// net/http's 4 KiB buffers would be most of what a held connection
	// costs. Clients send pongs and short events, and batchConn already
	// gathers what the writer puts out, so small buffers suffice. Bytes the
	// client sent right behind the upgrade request stay where they are.
	br := brw.Reader
	if br.Buffered() == 0 {
		w.br = bufio.NewReaderSize(w.conn, connReadBuffer)
		br = w.br
	}
	return w.conn, bufio.NewReadWriter(br, bufio.NewWriterSize(w.conn, connWriteBuffer)), nil
}

// Buffer sizes of a WebSocket connection. A frame larger than a buffer
// bypasses it: bufio reads or writes it directly.
const (
	connReadBuffer  = 512
	connWriteBuffer = 512
)
