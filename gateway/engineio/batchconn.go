package engineio

import (
	"bufio"
	"encoding/binary"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// batchConn is a WebSocket's connection. coder/websocket does the
// handshake, the reading and the control frames (pong, close), writing
// through Write; the engine's writers put data frames on the wire
// themselves, every frame of a drained batch in one write(2). Both the
// write(2) per message that coder/websocket's flush-per-message costs and its
// per-message locking were most of fan-out's CPU.
//
// mu keeps whole writes apart. coder/websocket writes a frame in one Write:
// its buffer (connWriteBuffer) holds the largest control frame, 127 bytes,
// and it flushes at the end of each frame. So frames never interleave, and
// each Write starts on a frame boundary, which lets Write notice a close frame.
//
// The pool's writers write on the descriptor's number (fd) themselves, not
// through Go's poller: its descriptor lock and deadline check cost a few
// cache misses per write, each on a line of the connection's own. That is
// safe because Close cannot close the number under them (and let the
// kernel hand it to another connection): it marks the connection closing,
// takes mu, which every write holds, and closes only after letting it go;
// a write that begins under mu once closing is set does not write.
type batchConn struct {
	net.Conn
	// fd is Conn's descriptor, for the writer pool's writes, which must not
	// park (see writeTurn); -1 where there is none (TLS).
	fd        int
	mu        sync.Mutex
	closeSent bool        // a close frame went out: no data frame may follow it (RFC 6455 §5.5.1)
	closing   atomic.Bool // Close has begun: no write may start
}

// newBatchConn wraps a hijacked connection.
func newBatchConn(c net.Conn) *batchConn {
	b := &batchConn{Conn: c, fd: -1}
	if sc, ok := c.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			b.fd = descriptor(raw)
		}
	}
	return b
}

func (b *batchConn) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closing.Load() {
		return 0, net.ErrClosed
	}
	if len(p) > 0 && p[0]&0x0f == opClose {
		b.closeSent = true
	}
	return b.Conn.Write(p)
}

// Close closes the connection once no write holds mu. Every path that
// closes a WebSocket's connection comes here: coder/websocket closes the
// net.Conn it was handed, which is b.
func (b *batchConn) Close() error {
	b.closing.Store(true)
	for !b.mu.TryLock() {
		// A write blocked under mu (the rest of a batch, a control frame,
		// to a client that stopped reading) ends at a deadline in the
		// past. Set again each round: the writer resets its own deadline
		// when its write returns, and the next to take mu sees closing.
		_ = b.Conn.SetWriteDeadline(time.Unix(1, 0))
		time.Sleep(time.Millisecond)
	}
	b.mu.Unlock()
	return b.Conn.Close()
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

// maxPooledFrameBuffer bounds what goes back to frameBuffers: the largest
// turn (turnBytes of packets and their headers) is pooled, since a backlog
// makes every turn that large and a new buffer each time was a tenth of
// fan-out's CPU (its zeroing and page faults); one grown by a packet larger
// than a turn is left to the collector.
const maxPooledFrameBuffer = 2 * turnBytes

// frameBatch frames each packet as one final, unmasked frame (a server
// never masks) into a pooled buffer; putFrameBuffer gives it back.
func frameBatch(batch []Packet) *[]byte {
	bufp := frameBuffers.Get().(*[]byte)
	size := 0
	for _, p := range batch {
		size += len(p.Data) + maxFrameHeader
	}
	buf := slices.Grow((*bufp)[:0], size)
	for _, p := range batch {
		op := byte(opText)
		if p.Binary {
			op = opBinary
		}
		buf = appendFrame(buf, op, p.Data)
	}
	*bufp = buf
	return bufp
}

func putFrameBuffer(bufp *[]byte) {
	if cap(*bufp) <= maxPooledFrameBuffer {
		*bufp = (*bufp)[:0]
		frameBuffers.Put(bufp)
	}
}

// writeNowLocked writes as much of buf as the kernel takes without waiting
// (nothing where the descriptor cannot be written so, as under TLS). The
// caller holds mu and writes the rest itself, still holding it.
func (b *batchConn) writeNowLocked(buf []byte) (int, error) {
	if b.closeSent || b.closing.Load() {
		return 0, net.ErrClosed
	}
	if b.fd < 0 {
		return 0, nil
	}
	return writeNonblocking(b.fd, buf)
}

// writeFrames writes batch, all of it in one write, waiting for the client
// as long as it takes: the closing writer's flush, which its caller bounds.
func (b *batchConn) writeFrames(batch []Packet) error {
	bufp := frameBatch(batch)
	b.mu.Lock()
	var err error
	if b.closeSent || b.closing.Load() {
		err = net.ErrClosed
	} else {
		_, err = b.Conn.Write(*bufp)
	}
	b.mu.Unlock()
	putFrameBuffer(bufp)
	return err
}

// maxFrameHeader is the longest header appendFrame writes.
const maxFrameHeader = 10

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
