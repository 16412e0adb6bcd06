package engineio

import (
	"errors"
	"fmt"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// The writers copy a turn's frames into one buffer and write it with one
// write(2) (frameBatch, writeNonblocking). These benchmarks measure the two
// alternatives issue 13 asked about, on a loopback TCP connection whose
// peer drains it, with frames of a fan-out event's size (224 bytes):
//
//   - writev(2) of the frames where they lie, which saves the copy;
//   - the fixed cost of entering the kernel (getppid), which is what
//     io_uring's batching of many sockets' writes into one submission
//     could save at most per write; the TCP and loopback work of each
//     write stays.
//
// On the 2-vCPU Intel Xeon of 2026-12-02 writev was as fast for one frame
// and slower for more (26 frames: 3.8–4.0 µs against 2.9–3.0; 300: 44–47
// µs against 36–42): the kernel does work per element of the vector that
// one buffer does not need; and entering the kernel took 67 ns of a
// one-frame write's 1.5 µs, the most io_uring could save per write. So
// neither is used:
//
//	go test -run '^$' -bench 'TurnWrite|KernelEntry' ./gateway/engineio/
func BenchmarkTurnWrite(b *testing.B) {
	const frameSize = 224
	for _, frames := range []int{1, 26, 300} {
		fs := make([][]byte, frames)
		for i := range fs {
			fs[i] = make([]byte, frameSize)
		}
		b.Run(fmt.Sprintf("frames=%d/copy+write", frames), func(b *testing.B) {
			fd := drainedDescriptor(b)
			buf := make([]byte, 0, frames*frameSize)
			b.SetBytes(int64(frames * frameSize))
			for b.Loop() {
				buf = buf[:0]
				for _, f := range fs {
					buf = append(buf, f...)
				}
				writeAll(b, fd, buf)
			}
		})
		b.Run(fmt.Sprintf("frames=%d/writev", frames), func(b *testing.B) {
			fd := drainedDescriptor(b)
			b.SetBytes(int64(frames * frameSize))
			iovs := make([][]byte, len(fs))
			for b.Loop() {
				copy(iovs, fs)
				for rest := iovs; len(rest) > 0; {
					n, err := unix.Writev(fd, rest)
					if err != nil && !errors.Is(err, syscall.EAGAIN) && !errors.Is(err, syscall.EINTR) {
						b.Fatal(err)
					}
					rest = advance(rest, max(n, 0))
				}
			}
		})
	}
}

// BenchmarkKernelEntry is the cost of a system call that does nothing.
func BenchmarkKernelEntry(b *testing.B) {
	for b.Loop() {
		syscall.Getppid()
	}
}

// drainedDescriptor is the descriptor of one end of a loopback connection
// whose other end a goroutine reads until the benchmark ends.
func drainedDescriptor(b *testing.B) int {
	client, server := tcpPair(b)
	go func() {
		buf := make([]byte, 1<<20)
		for {
			if _, err := client.Read(buf); err != nil {
				return
			}
		}
	}()
	return descriptor(mustRaw(b, server))
}

// writeAll writes p, retrying while the socket buffer is full (the reader
// drains it).
func writeAll(b *testing.B, fd int, p []byte) {
	for len(p) > 0 {
		n, err := writeNonblocking(fd, p)
		if err != nil {
			b.Fatal(err)
		}
		p = p[n:]
	}
}

// advance drops the first n bytes of iovs.
func advance(iovs [][]byte, n int) [][]byte {
	for n > 0 && len(iovs) > 0 {
		if n < len(iovs[0]) {
			iovs[0] = iovs[0][n:]
			return iovs
		}
		n -= len(iovs[0])
		iovs = iovs[1:]
	}
	return iovs
}
