package gateway

import (
	"encoding/json"
	"testing"

	"github.com/koordi/koordi-realtime/schema"
)

// FuzzDecodePID: a pid comes back from the client; anything that is not one
// we signed must be refused, never crash, and a valid one must round-trip.
// Seeds in testdata/fuzz/FuzzDecodePID.
func FuzzDecodePID(f *testing.F) {
	key := derivePIDKey(testSecret)
	good := encodePID(key, pid{instance: [8]byte{9}, start: schema.Offset{LSN: 0x169A3F8, Index: 2}, userID: uuid(1)})
	f.Add(good)
	f.Add("")
	f.Add(good[:len(good)-2] + "AA")
	f.Add(good[:34] + "\n" + good[34:]) // the decoder skips newlines: once accepted
	f.Fuzz(func(t *testing.T, s string) {
		p, err := decodePID(key, s)
		if err != nil {
			return
		}
		if !schema.IsUUID(p.userID) || encodePID(key, p) != s {
			t.Fatalf("accepted %q as %+v", s, p)
		}
	})
}

// FuzzParseAuth: the CONNECT auth object is arbitrary client JSON.
// Seeds in testdata/fuzz/FuzzParseAuth.
func FuzzParseAuth(f *testing.F) {
	f.Add([]byte(`{"token":"a.b.c","pid":"x","offset":"0000000000000001-00000000"}`))
	f.Add([]byte(`null`))
	f.Add([]byte(`{"token":42}`))
	f.Add([]byte(`[1,2]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		a := parseAuth(json.RawMessage(b))
		if a.Token != "" && !json.Valid(b) {
			t.Fatalf("token %q from invalid JSON %q", a.Token, b)
		}
	})
}
