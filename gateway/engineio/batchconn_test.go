package engineio

import (
	"bytes"
	"net"
	"testing"
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

// TestBatchConnOneWritePerBatch: the flushes coder/websocket makes for each
// message of a batch reach the connection as one write, in order; outside a
// batch (control frames, single packets) writes pass straight through.
func TestBatchConnOneWritePerBatch(t *testing.T) {
	under := &countingConn{}
	b := &batchConn{Conn: under}
	if _, err := b.Write([]byte("pong")); err != nil {
		t.Fatal(err)
	}
	b.begin()
	for _, frame := range []string{"a", "bb", "ccc"} {
		if _, err := b.Write([]byte(frame)); err != nil {
			t.Fatal(err)
		}
	}
	if len(under.writes) != 1 {
		t.Fatalf("%d writes reached the connection during the batch, want only the earlier one", len(under.writes))
	}
	if err := b.end(); err != nil {
		t.Fatal(err)
	}
	if len(under.writes) != 2 || !bytes.Equal(under.writes[1], []byte("abbccc")) {
		t.Fatalf("writes %q, want [pong abbccc]", under.writes)
	}
	if err := b.end(); err != nil || len(under.writes) != 2 {
		t.Fatalf("an empty batch wrote: %q, %v", under.writes, err)
	}
}
