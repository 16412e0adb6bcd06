package raw

import (
	"bytes"
	"encoding/json"
	"strconv"
	"testing"
	"time"

	"github.com/koordi/koordi-realtime/cmd/koordi-bench/internal/harness"
	"github.com/koordi/koordi-realtime/cmd/koordi-bench/internal/sioclient"
	"github.com/koordi/koordi-realtime/gateway/auth"
	"github.com/koordi/koordi-realtime/gateway/socketio"
	"github.com/koordi/koordi-realtime/schema"
)

// TestFrameIsKoordis checks that raw's frame is byte for byte what
// koordi-realtime sends for the bench's title update: the payload its
// deriver marshals, encoded by gateway/socketio, in a WebSocket text frame.
func TestFrameIsKoordis(t *testing.T) {
	tests := []struct {
		cal, event int
		stamp      int64
		k          int64
	}{
		{0, 0, 1_764_000_000_123_456_789, 0},
		{99, 17, 1_800_000_000_000_000_001, 12345},
		{4095, 0xffff, 1_000_000_000_000_000_000, 1 << 40},
	}
	for _, tt := range tests {
		payload, err := json.Marshal(schema.EventChange{
			EventID: harness.EventID(tt.cal, tt.event), EventTitle: "bench:" + strconv.FormatInt(tt.stamp, 10),
			EventCalendarID: harness.CalendarID(tt.cal), Changed: []string{"title"},
		})
		if err != nil {
			t.Fatal(err)
		}
		off := `"` + schema.Offset{LSN: lsnOf(tt.k)}.String() + `"`
		want := socketio.EncodeEvent("/", schema.EventUpdated, payload, json.RawMessage(off))
		got := appendFrame(nil, tt.cal, tt.event, tt.stamp, lsnOf(tt.k))
		if len(got) != frameLen {
			t.Fatalf("frame is %d bytes, want %d", len(got), frameLen)
		}
		if got[0] != 0x81 || got[1] != 126 || int(got[2])<<8|int(got[3]) != len(want) {
			t.Fatalf("header % x for a %d-byte payload", got[:4], len(want))
		}
		if !bytes.Equal(got[headerLen:], want) {
			t.Fatalf("payload\n got %s\nwant %s", got[headerLen:], want)
		}
		if s := string(got[stampAt : stampAt+stampLen]); s != strconv.FormatInt(tt.stamp, 10) {
			t.Fatalf("stamp at %d is %q", stampAt, s)
		}
	}
}

// TestFrameParsesLikeTheFleet reads raw's frame the way the bench's
// clients read every server's (scenario.fleet): name, title stamp, offset.
func TestFrameParsesLikeTheFleet(t *testing.T) {
	stamp := time.Date(2026, 12, 1, 10, 0, 0, 42, time.UTC).UnixNano()
	f := appendFrame(nil, 3, 5, stamp, lsnOf(7))
	p, err := sioclient.ParseSocket(f[headerLen+1:])
	if err != nil || p.Type != sioclient.SocketEvent {
		t.Fatalf("parse: %+v %v", p, err)
	}
	name, args, err := sioclient.EventName(p.Data)
	if err != nil || string(name) != "event:updated" {
		t.Fatalf("name %q, %v", name, err)
	}
	title, ok := sioclient.StringField(args, "event_title")
	if !ok || string(title) != "bench:"+strconv.FormatInt(stamp, 10) {
		t.Fatalf("title %q", title)
	}
	if !bytes.HasSuffix(args, []byte(`,"0000000001000700-00000000"`)) {
		t.Fatalf("offset not last: %s", args)
	}
}

func TestUserOfConnect(t *testing.T) {
	secret := bytes.Repeat([]byte("s"), auth.MinSecretLen)
	tok, err := auth.Mint(secret, harness.UserID(4711), "u@bench.test", time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		in   string
		want int
	}{
		{string(sioclient.AppendConnect(nil, tok)), 4711},
		{`40`, -1},
		{`40{"token":"a.b"}`, -1},
		{`40{"token":"a.!!!.c"}`, -1},
		{`40{"token":"a.eyJ4IjoxfQ.c"}`, -1}, // {"x":1}
		{`41`, -1},
		{`40/admin,{"token":"` + tok + `"}`, -1},
	}
	for _, tt := range tests {
		got, err := userOfConnect([]byte(tt.in))
		if got != tt.want || (tt.want < 0) != (err != nil) {
			t.Errorf("%.40s: got %d, %v; want %d", tt.in, got, err, tt.want)
		}
	}
}

func TestParseRequest(t *testing.T) {
	tests := []struct {
		name, head string
		want       request
		wantErr    bool
	}{
		{
			name: "upgrade",
			head: "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nUpgrade: WebSocket\r\n\r\n",
			want: request{upgrade: true, key: []byte("dGhlIHNhbXBsZSBub25jZQ=="), websocket: true},
		},
		{
			name: "polling probe",
			head: "GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\n\r\n",
			want: request{polling: true},
		},
		{name: "EIO 3", head: "GET /socket.io/?EIO=3&transport=polling HTTP/1.1\r\n\r\n", wantErr: true},
		{name: "other path", head: "GET /metrics HTTP/1.1\r\n\r\n", wantErr: true},
		{name: "POST", head: "POST /socket.io/?EIO=4&transport=polling HTTP/1.1\r\n\r\n", wantErr: true},
		{name: "garbage", head: "hello\r\n\r\n", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseRequest([]byte(tt.head))
			if tt.wantErr {
				if err == nil {
					t.Fatalf("accepted: %+v", got)
				}
				return
			}
			if err != nil || got.upgrade != tt.want.upgrade || !bytes.Equal(got.key, tt.want.key) ||
				got.websocket != tt.want.websocket || got.polling != tt.want.polling {
				t.Fatalf("got %+v, %v", got, err)
			}
		})
	}
	// RFC 6455 §1.3's example.
	if got := acceptKey([]byte("dGhlIHNhbXBsZSBub25jZQ==")); got != "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" {
		t.Fatalf("accept key %s", got)
	}
}

func maskedFrame(op byte, payload []byte) []byte {
	mask := [4]byte{1, 2, 3, 4}
	b := []byte{0x80 | op}
	switch n := len(payload); {
	case n < 126:
		b = append(b, 0x80|byte(n))
	case n < 1<<16:
		b = append(b, 0x80|126, byte(n>>8), byte(n))
	default:
		b = append(b, 0x80|127, 0, 0, 0, 0, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
	b = append(b, mask[:]...)
	for i, c := range payload {
		b = append(b, c^mask[i&3])
	}
	return b
}

func TestParseClientFrame(t *testing.T) {
	long := bytes.Repeat([]byte("x"), 300)
	tests := []struct {
		name    string
		in      []byte
		op      byte
		payload []byte
		n       int
		wantErr bool
	}{
		{name: "short text", in: maskedFrame(1, []byte("40")), op: 1, payload: []byte("40"), n: 8},
		{name: "16-bit length", in: maskedFrame(1, long), op: 1, payload: long, n: 8 + 300},
		{name: "partial header", in: maskedFrame(1, long)[:3]},
		{name: "partial payload", in: maskedFrame(1, long)[:100]},
		{name: "close", in: maskedFrame(8, nil), op: 8, payload: []byte{}, n: 6},
		{name: "unmasked", in: []byte{0x81, 2, 'h', 'i'}, wantErr: true},
		{name: "fragment", in: []byte{0x01, 0x82, 0, 0, 0, 0, 'h', 'i'}, wantErr: true},
		{name: "too long", in: maskedFrame(1, make([]byte, 1<<16+1)), wantErr: true},
		{name: "empty", in: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, n, err := parseClientFrame(append([]byte(nil), tt.in...))
			if tt.wantErr != (err != nil) {
				t.Fatalf("err %v", err)
			}
			if n != tt.n || (n > 0 && (f.op != tt.op || !bytes.Equal(f.payload, tt.payload))) {
				t.Fatalf("got op %d %q n %d", f.op, f.payload, n)
			}
		})
	}
}

func TestPlan(t *testing.T) {
	p := Plan{Calendars: 10, EventsPerCalendar: 3, Rate: 2000, Duration: 1500 * time.Millisecond}
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	if p.Commits() != 3000 || p.Interval() != 500*time.Microsecond {
		t.Fatalf("commits %d interval %s", p.Commits(), p.Interval())
	}
	if c, e := p.Commit(37); c != 7 || e != 0 {
		t.Fatalf("commit 37: %d %d", c, e)
	}
	if c, e := p.Commit(10*3 + 4); c != 4 || e != 0 {
		t.Fatalf("commit 34: %d %d", c, e)
	}
	if c, e := p.Commit(15); c != 5 || e != 1 {
		t.Fatalf("commit 15: %d %d", c, e)
	}
	for _, bad := range []Plan{
		{EventsPerCalendar: 1, Backlog: 1},
		{Calendars: 1, Backlog: 1},
		{Calendars: 1, EventsPerCalendar: 1},
		{Calendars: 1, EventsPerCalendar: 1, Rate: 10},
		{Calendars: 1, EventsPerCalendar: 1, Backlog: -1},
	} {
		if bad.Validate() == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}
