package engineio

import (
	"bufio"
	"encoding/binary"
	"net"
	"net/http"
	"sync"
	"syscall"
)

// batchConn is a WebSocket's connection. coder/websocket does the
// handshake, the reading and the control frames (pong, close), writing
// through Write; the engine's writer puts data frames on the wire itself with
// writeFrames, every frame of a drained batch in one write(2). Both the
// write(2) per message that coder/websocket's flush-per-message costs and its
// per-message locking were most of fan-out's CPU.
//
// mu keeps whole writes apart. coder/websocket writes a frame in one Write:
// its buffer (connWriteBuffer) holds the largest control frame, 127 bytes,
// and it flushes at the end of each frame. So frames never interleave, and
// each Write starts on a frame boundary, which lets Write notice a close frame.
type batchConn struct {
	net.Conn
	// raw is Conn's descriptor for writes that must not park while they hold
	// a write slot (see writeFrames); nil where there is none (TLS).
	raw       syscall.RawConn
	mu        sync.Mutex
	closeSent bool // a close frame went out: no data frame may follow it (RFC 6455 §5.5.1)
}

// newBatchConn wraps a hijacked connection.
func newBatchConn(c net.Conn) *batchConn {
	b := &batchConn{Conn: c}
	if sc, ok := c.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			b.raw = raw
		}
	}
	return b
}

func (b *batchConn) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(p) > 0 && p[0]&0x0f == opClose {
		b.closeSent = true
	}
	return b.Conn.Write(p)
}

// WebSocket opcodes (RFC 6455 §5.2).
const (
	opText   = 0x1
	opBinary = 0x2
	opClose  = 0x8
)

// frameBuffers holds the buffers batches are framed into, so that no
// connection keeps one between batches.
var frameBuffers = sync.Pool{New: func() any { return new([]byte) }}

// maxPooledFrameBuffer bounds what goes back to frameBuffers: a buffer grown
// by a rare large batch is left to the collector.
const maxPooledFrameBuffer = 64 << 10

// writeFrames writes each packet as one final, unmasked frame (a server
// never masks), all of them in one write.
//
// With slots (the server's write slots, see Config.ConcurrentWrites) the
// write waits for a slot and holds it only while the kernel takes bytes
// without waiting: whatever a full socket buffer leaves is written after the
// slot is given back, so a client that stopped reading holds no slot and
// cannot starve the rest.
func (b *batchConn) writeFrames(batch []Packet, slots chan struct{}) error {
	bufp := frameBuffers.Get().(*[]byte)
	buf := (*bufp)[:0]
	for _, p := range batch {
		op := byte(opText)
		if p.Binary {
			op = opBinary
		}
		buf = appendFrame(buf, op, p.Data)
	}
	// mu before the slot: coder/websocket's control-frame writes (a pong to
	// a client that stopped reading) hold mu and may wait on that client,
	// and a slot must never wait behind them.
	b.mu.Lock()
	var err error
	switch {
	case b.closeSent:
		err = net.ErrClosed
	case slots != nil && b.raw != nil:
		slots <- struct{}{}
		var n int
		n, err = b.writeNow(buf)
		<-slots
		if err == nil && n < len(buf) {
			_, err = b.Conn.Write(buf[n:])
		}
	default:
		_, err = b.Conn.Write(buf)
	}
	b.mu.Unlock()
	if cap(buf) <= maxPooledFrameBuffer {
		*bufp = buf[:0]
		frameBuffers.Put(bufp)
	}
	return err
}

// appendFrame appends a final, unmasked frame carrying payload.
func appendFrame(buf []byte, op byte, payload []byte) []byte {
	n := len(payload)
	switch {
	case n < 126:
		buf = append(buf, 0x80|op, byte(n))
	case n <= 0xffff:
		buf = append(buf, 0x80|op, 126)
		buf = binary.BigEndian.AppendUint16(buf, uint16(n))
	default:
		buf = append(buf, 0x80|op, 127)
		buf = binary.BigEndian.AppendUint64(buf, uint64(n))
	}
	return append(buf, payload...)
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
	w.conn = newBatchConn(c)
	// net/http's 4 KiB buffers would be most of what a held connection
	// costs. Clients send pongs and short events, and coder/websocket writes
	// only control frames, so small buffers suffice. Bytes the
	// client sent right behind the upgrade request stay where they are.
	br := brw.Reader
	if br.Buffered() == 0 {
		w.br = bufio.NewReaderSize(w.conn, connReadBuffer)
		br = w.br
	}
	return w.conn, bufio.NewReadWriter(br, bufio.NewWriterSize(w.conn, connWriteBuffer)), nil
}

// Buffer sizes of a WebSocket connection. A frame larger than the read
// buffer bypasses it; the write buffer must hold a whole control frame
// (see batchConn).
const (
	connReadBuffer  = 128
	connWriteBuffer = 128
)
