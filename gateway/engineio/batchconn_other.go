//go:build !unix

package engineio

// nowWriter writes nothing where descriptors cannot be written without
// parking; a writer of the pool then hands the whole batch to a goroutine
// that may wait.
type nowWriter struct{}

func newNowWriter() *nowWriter { return &nowWriter{} }

func (*nowWriter) writeNow(*batchConn, []byte) (int, error) { return 0, nil }
