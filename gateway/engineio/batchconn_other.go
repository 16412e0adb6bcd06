//go:build !unix

package engineio

import "syscall"

// descriptor gives no descriptor where one cannot be written without
// parking: a writer of the pool then hands the whole batch to a goroutine
// that may wait.
func descriptor(syscall.RawConn) int { return -1 }

func writeNonblocking(int, []byte) (int, error) { return 0, nil }
