package socketio

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/koordi/koordi-realtime/gateway/engineio"
	"github.com/koordi/koordi-realtime/schema"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/golden")

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", "golden", name)
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s:\n got %q\nwant %q", name, got, want)
	}
}

func TestDecodePacketGolden(t *testing.T) {
	cases := []struct{ name, in string }{
		{"connect", "0"},
		{"connect-auth", `0{"token":"123"}`},
		{"connect-custom", "0/custom,"},
		{"connect-custom-no-comma", "0/custom"},
		{"connect-custom-auth", `0/custom,{"token":"abc"}`},
		{"disconnect", "1"},
		{"disconnect-custom", "1/custom,"},
		{"event", `2["message",1,"2",{"3":[true]}]`},
		{"event-ack", `2456["message-with-ack",1]`},
		{"event-custom-ack", `2/custom,7["a"]`},
		{"event-number-name", `2[42,"x"]`},
		{"ack", `3456[1,"2"]`},
		{"connect-error", `4{"message":"no"}`},
		{"binary-event", `52-["message",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]`},
		{"binary-ack", `62-789[{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]`},
		// Refused, as by the reference parser.
		{"err-empty", ""},
		{"err-type", "abc"},
		{"err-type-7", "7"},
		{"err-event-object", "2{}"},
		{"err-event-bad-id", `2abc["message-with-ack",1]`},
		{"err-event-empty-array", "2[]"},
		{"err-event-no-payload", "2"},
		{"err-event-reserved", `2["connect"]`},
		{"err-event-bool-name", `2[true]`},
		{"err-connect-array", "0[]"},
		{"err-disconnect-payload", "1{}"},
		{"err-ack-object", "3{}"},
		{"err-bad-json", `2["a",`},
		{"err-binary-no-dash", `52["a"]`},
		{"err-binary-count", `5x-["a"]`},
		{"err-binary-too-many", `599-["a"]`},
		{"err-id-too-long", `21234567890123456["a"]`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, err := DecodePacket([]byte(c.in))
			var out string
			if err != nil {
				if !errors.Is(err, ErrBadPacket) {
					t.Errorf("error %v is not ErrBadPacket", err)
				}
				out = fmt.Sprintf("error: %v\n", err)
			} else {
				out = fmt.Sprintf("type=%d nsp=%q id=%d attachments=%d data=%s\n", p.Type, p.Namespace, p.ID, p.Attachments, p.Data)
				// Re-encoding gives back the input, up to the optional ",".
				if again := string(AppendPacket(nil, p)); again != c.in && again != c.in+"," {
					t.Errorf("re-encoded as %q", again)
				}
			}
			golden(t, "decode-"+c.name+".txt", []byte(out))
		})
	}
}

func TestEncodeGolden(t *testing.T) {
	raw := func(s string) json.RawMessage { return json.RawMessage(s) }
	cases := []struct {
		name string
		enc  func() ([]engineio.Packet, error)
	}{
		{"event-main", func() ([]engineio.Packet, error) {
			return []engineio.Packet{{Data: EncodeEvent("/", "event:assigned", raw(`{"id":"e1"}`), raw(`"000000000169A3F8-0002"`))}}, nil
		}},
		{"event-custom", func() ([]engineio.Packet, error) {
			return []engineio.Packet{{Data: EncodeEvent("/custom", "auth", raw(`{}`))}}, nil
		}},
		{"event-no-args", func() ([]engineio.Packet, error) {
			return []engineio.Packet{{Data: EncodeEvent("", "ping")}}, nil
		}},
		{"event-escaped-name", func() ([]engineio.Packet, error) {
			return []engineio.Packet{{Data: EncodeEvent("/", "a\"b\\c\n<&>\u2028\x01é")}}, nil
		}},
		{"emit-values", func() ([]engineio.Packet, error) {
			return encodePacket(Event, "/", -1, []json.RawMessage{appendQuoted(nil, "message-back")}, []any{1, "2", map[string]any{"3": []bool{true}}})
		}},
		{"emit-binary", func() ([]engineio.Packet, error) {
			return encodePacket(Event, "/", -1, []json.RawMessage{appendQuoted(nil, "message-back")}, []any{Binary{1, 2, 3}, Binary{4, 5, 6}})
		}},
		{"ack", func() ([]engineio.Packet, error) {
			return encodePacket(Ack, "/", 456, nil, []any{raw(`1`), raw(`"2"`), raw(`{"3":[false]}`)})
		}},
		{"ack-binary-custom", func() ([]engineio.Packet, error) {
			return encodePacket(Ack, "/custom", 789, nil, []any{Binary{1, 2, 3}, "x"})
		}},
		{"connect-reply", func() ([]engineio.Packet, error) {
			return []engineio.Packet{{Data: packetFrame(Packet{Type: Connect, ID: -1, Data: raw(`{"sid":"abc","pid":"p"}`)})}}, nil
		}},
		{"connect-error", func() ([]engineio.Packet, error) {
			return []engineio.Packet{{Data: packetFrame(Packet{Type: ConnectError, Namespace: "/random", ID: -1, Data: raw(`{"message":"Invalid namespace"}`)})}}, nil
		}},
		{"disconnect", func() ([]engineio.Packet, error) {
			return []engineio.Packet{{Data: packetFrame(Packet{Type: Disconnect, Namespace: "/custom", ID: -1})}}, nil
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ps, err := c.enc()
			if err != nil {
				t.Fatal(err)
			}
			var out bytes.Buffer
			for _, p := range ps {
				if p.Binary {
					fmt.Fprintf(&out, "binary %x\n", p.Data)
				} else {
					fmt.Fprintf(&out, "text %s\n", p.Data)
					if i := bytes.IndexAny(p.Data, "[{"); i >= 0 && !json.Valid(p.Data[i:]) {
						t.Errorf("payload of %q is not JSON", p.Data)
					}
				}
			}
			golden(t, "encode-"+c.name+".txt", out.Bytes())
		})
	}
	if _, err := encodePacket(Event, "/", -1, nil, []any{json.RawMessage(`{`)}); err == nil {
		t.Error("invalid raw argument accepted")
	}
	if _, err := encodePacket(Event, "/", -1, nil, []any{make(chan int)}); err == nil {
		t.Error("unencodable argument accepted")
	}
}

func TestEncodeEventAllocatesOnce(t *testing.T) {
	payload := json.RawMessage(`{"id":"e1","title":"Swim practice"}`)
	off := json.RawMessage(`"000000000169A3F8-0002"`)
	if n := testing.AllocsPerRun(100, func() { EncodeEvent("/", "event:assigned", payload, off) }); n != 1 {
		t.Errorf("EncodeEvent allocates %v times, want 1", n)
	}
}

func TestPlaceholders(t *testing.T) {
	for _, c := range []struct {
		data string
		n    int
		ok   bool
	}{
		{`["a",{"_placeholder":true,"num":0}]`, 1, true},
		{`["a",{"x":[{"_placeholder":true,"num":1}]}]`, 2, true},
		{`["a",{"_placeholder":true,"num":1}]`, 1, false},
		{`["a",{"_placeholder":true,"num":-1}]`, 1, false},
		{`["a",{"_placeholder":true,"num":0.5}]`, 1, false},
		{`["a",{"_placeholder":true}]`, 1, false},
		{`["a",{"_placeholder":false,"num":9}]`, 0, true},
	} {
		if err := checkPlaceholders(json.RawMessage(c.data), c.n); (err == nil) != c.ok {
			t.Errorf("checkPlaceholders(%s, %d) = %v", c.data, c.n, err)
		}
	}
	if n, ok := PlaceholderNum(json.RawMessage(`{"_placeholder":true,"num":3}`)); !ok || n != 3 {
		t.Errorf("PlaceholderNum = %d %v", n, ok)
	}
	for _, s := range []string{`{"num":3}`, `"_placeholder"`, `{"_placeholder":true}`, `[{"_placeholder":true,"num":1}]`} {
		if _, ok := PlaceholderNum(json.RawMessage(s)); ok {
			t.Errorf("PlaceholderNum(%s) reported a placeholder", s)
		}
	}
}

func FuzzDecodePacket(f *testing.F) {
	for _, s := range []string{"0", `0{"token":"1"}`, "0/custom,", `2["message",1]`, `2456["a"]`, `3456[1]`,
		`52-["m",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]`, "4abc", "2{}", `2abc["a"]`, "1/x,"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := DecodePacket(b)
		if err != nil {
			if !errors.Is(err, ErrBadPacket) {
				t.Fatalf("error %v is not ErrBadPacket", err)
			}
			return
		}
		if p.Attachments < 0 || p.Attachments > MaxAttachments {
			t.Fatalf("attachments %d", p.Attachments)
		}
		if p.Data != nil && !json.Valid(p.Data) {
			t.Fatalf("invalid JSON accepted: %q", p.Data)
		}
		if p.Type == Event || p.Type == BinaryEvent {
			args, err := splitArgs(p.Data)
			if err != nil || len(args) == 0 {
				t.Fatalf("event payload %q accepted but does not split: %v", p.Data, err)
			}
			if _, err := eventName(p.Data); err != nil {
				t.Fatalf("event payload %q accepted without a name: %v", p.Data, err)
			}
		}
		// Encoding the decoded packet decodes to the same packet.
		q, err := DecodePacket(AppendPacket(nil, p))
		if err != nil || q.Type != p.Type || q.Namespace != p.Namespace || q.ID != p.ID || q.Attachments != p.Attachments || !bytes.Equal(q.Data, p.Data) {
			t.Fatalf("round trip: %+v → %+v (%v)", p, q, err)
		}
	})
}

// FuzzBinaryPacket drives the reassembly of a binary packet with its
// attachments through a client, as engineio delivers them.
func FuzzBinaryPacket(f *testing.F) {
	f.Add([]byte(`52-["message",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]`), []byte{1, 2, 3}, uint8(2))
	f.Add([]byte(`62-789[{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]`), []byte{4}, uint8(2))
	f.Add([]byte(`51-["m",{"_placeholder":true,"num":5}]`), []byte{}, uint8(1))
	f.Add([]byte(`2["m"]`), []byte{9}, uint8(1))
	f.Fuzz(func(t *testing.T, text, att []byte, n uint8) {
		h := &fuzzHandler{}
		cl := newMemClient(t, h)
		cl.onMessage(text, false)
		for range n % 12 {
			cl.onMessage(att, true)
		}
		if h.events > 0 && h.attachments > MaxAttachments {
			t.Fatalf("%d attachments delivered", h.attachments)
		}
		if len(cl.attachments) > MaxAttachments {
			t.Fatalf("%d attachments buffered", len(cl.attachments))
		}
	})
}

// TestReservedEventNames: a client may emit no name socket.io-client
// handles itself, and every other name passes; the list is the catalogue's
// (schema.IsReservedEventName), which also keeps the server from sending one.
func TestReservedEventNames(t *testing.T) {
	for _, name := range []string{"connect", "connect_error", "disconnect", "disconnecting", "newListener", "removeListener",
		"Connect", "connected", "message", "join:calendar", "event:created", ""} {
		_, err := DecodePacket([]byte(`2[` + strconv.Quote(name) + `]`))
		if refused := err != nil; refused != schema.IsReservedEventName(name) {
			t.Errorf("event %q: DecodePacket error %v, but schema.IsReservedEventName = %v", name, err, schema.IsReservedEventName(name))
		}
	}
}
