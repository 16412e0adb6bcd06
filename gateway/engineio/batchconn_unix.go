//go:build unix

package engineio

import (
	"errors"
	"syscall"
)

// descriptor is raw's descriptor number, or -1 if it cannot be had.
func descriptor(raw syscall.RawConn) int {
	fd := -1
	if err := raw.Control(func(d uintptr) { fd = int(d) }); err != nil {
		return -1
	}
	return fd
}

// writeNonblocking writes as much of p to fd as the kernel takes at once and
// returns how much that was: Go's descriptors are non-blocking, so a full
// socket buffer (EAGAIN) ends the write instead of waiting.
func writeNonblocking(fd int, p []byte) (int, error) {
	written := 0
	for written < len(p) {
		n, err := syscall.Write(fd, p[written:])
		if n > 0 {
			written += n
		}
		switch {
		case errors.Is(err, syscall.EINTR):
			continue
		case errors.Is(err, syscall.EAGAIN):
			return written, nil
		case err != nil:
			return written, err
		case n == 0:
			return written, nil
		}
	}
	return written, nil
}
