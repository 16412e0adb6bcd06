//go:build !unix

package engineio

// writeNow writes nothing where descriptors cannot be written without
// parking; writeFrames then writes the whole batch after giving the slot back.
func (b *batchConn) writeNow(p []byte) (int, error) { return 0, nil }
