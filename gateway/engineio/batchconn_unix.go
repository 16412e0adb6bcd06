//go:build unix

package engineio

import (
	"errors"
	"syscall"
)

// writeNow writes as much of p as the kernel takes at once and returns how
// much that was. It never parks the goroutine: Go's descriptors are
// non-blocking, and the callback reports itself done whatever write(2)
// answered, so a full socket buffer (EAGAIN) ends it instead of waiting for
// the poller.
func (b *batchConn) writeNow(p []byte) (int, error) {
	written := 0
	var werr error
	err := b.raw.Write(func(fd uintptr) bool {
		for written < len(p) {
			n, err := syscall.Write(int(fd), p[written:])
			if n > 0 {
				written += n
			}
			switch {
			case errors.Is(err, syscall.EINTR):
				continue
			case errors.Is(err, syscall.EAGAIN):
				return true
			case err != nil:
				werr = err
				return true
			case n == 0:
				return true
			}
		}
		return true
	})
	if err != nil {
		return written, err
	}
	return written, werr
}
