//go:build unix

package engineio

import (
	"errors"
	"syscall"
)

// nowWriter writes without parking: its callback reports itself done
// whatever write(2) answered, so a full socket buffer (EAGAIN) ends the
// write instead of waiting for the poller (Go's descriptors are
// non-blocking). Each writer of the pool has one, reused for every write: a
// closure per write would be an allocation per write.
type nowWriter struct {
	fn      func(fd uintptr) bool
	buf     []byte
	written int
	err     error
}

func newNowWriter() *nowWriter {
	w := &nowWriter{}
	w.fn = w.writeSome
	return w
}

// writeNow writes as much of p to b as the kernel takes at once and returns
// how much that was.
func (w *nowWriter) writeNow(b *batchConn, p []byte) (int, error) {
	w.buf, w.written, w.err = p, 0, nil
	err := b.raw.Write(w.fn)
	n, werr := w.written, w.err
	w.buf, w.err = nil, nil
	if err != nil {
		return n, err
	}
	return n, werr
}

func (w *nowWriter) writeSome(fd uintptr) bool {
	for w.written < len(w.buf) {
		n, err := syscall.Write(int(fd), w.buf[w.written:])
		if n > 0 {
			w.written += n
		}
		switch {
		case errors.Is(err, syscall.EINTR):
			continue
		case errors.Is(err, syscall.EAGAIN):
			return true
		case err != nil:
			w.err = err
			return true
		case n == 0:
			return true
		}
	}
	return true
}
