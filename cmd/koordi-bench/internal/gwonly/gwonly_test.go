package gwonly

import (
	"testing"

	"github.com/koordi/koordi-realtime/cmd/koordi-bench/internal/raw"
	"github.com/koordi/koordi-realtime/gateway"
)

// TestSameBytesAsRaw: the packet the gateway encodes for an envelope of
// this server is raw's frame payload, so both servers send the clients the
// same bytes.
func TestSameBytesAsRaw(t *testing.T) {
	const stamp = int64(1_764_633_600_123_456_789)
	for _, tc := range []struct{ cal, e int }{{0, 0}, {7, 3}, {99, 99}} {
		var p publisher
		tx := p.commit()
		ev := envelope(tx.CommitLSN, 0, tc.cal, tc.e, stamp)
		got := gateway.EncodeEnvelope(&ev)
		want := raw.Payload(tc.cal, tc.e, stamp, tx.CommitLSN)
		if string(got) != string(want) {
			t.Errorf("calendar %d event %d:\n got %s\nwant %s", tc.cal, tc.e, got, want)
		}
	}
}
