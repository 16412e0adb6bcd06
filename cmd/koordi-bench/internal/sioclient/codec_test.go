package sioclient

import (
	"errors"
	"testing"
)

func TestParseSocket(t *testing.T) {
	tests := []struct {
		in      string
		typ     byte
		nsp     string
		id      int64
		data    string
		wantErr bool
	}{
		{in: `0{"sid":"abc","pid":"p"}`, typ: SocketConnect, id: -1, data: `{"sid":"abc","pid":"p"}`},
		{in: `0`, typ: SocketConnect, id: -1},
		{in: `0/custom,{"sid":"x"}`, typ: SocketConnect, nsp: "/custom", id: -1, data: `{"sid":"x"}`},
		{in: `0/custom`, typ: SocketConnect, nsp: "/custom", id: -1},
		{in: `2["event:updated",{"a":1},"0000000001000000-0001"]`, typ: SocketEvent, id: -1, data: `["event:updated",{"a":1},"0000000001000000-0001"]`},
		{in: `212["join:calendar","x"]`, typ: SocketEvent, id: 12, data: `["join:calendar","x"]`},
		{in: `2/admin,7["x"]`, typ: SocketEvent, nsp: "/admin", id: 7, data: `["x"]`},
		{in: `31[true]`, typ: SocketAck, id: 1, data: `[true]`},
		{in: `4{"message":"Authentication error: invalid token"}`, typ: SocketConnectError, id: -1, data: `{"message":"Authentication error: invalid token"}`},
		{in: `1`, typ: SocketDisconnect, id: -1},
		{in: ``, wantErr: true},
		{in: `9`, wantErr: true},
		{in: `51-["x",{"_placeholder":true,"num":0}]`, wantErr: true},
		{in: `299999999999999999999["x"]`, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			p, err := ParseSocket([]byte(tt.in))
			if tt.wantErr {
				if !errors.Is(err, ErrMalformed) {
					t.Fatalf("got %+v, %v; want ErrMalformed", p, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if p.Type != tt.typ || string(p.Namespace) != tt.nsp || p.ID != tt.id || string(p.Data) != tt.data {
				t.Errorf("got type %c nsp %q id %d data %q", p.Type, p.Namespace, p.ID, p.Data)
			}
		})
	}
}

func TestEventName(t *testing.T) {
	tests := []struct {
		in, name, args string
		wantErr        bool
	}{
		{in: `["event:updated",{"event_title":"bench:1"},"0000000001000000-0001"]`, name: "event:updated", args: `{"event_title":"bench:1"},"0000000001000000-0001"`},
		{in: `["bench:ready",3]`, name: "bench:ready", args: `3`},
		{in: `["ping"]`, name: "ping", args: ``},
		{in: `["a\"b",1]`, name: `a\"b`, args: `1`},
		{in: `[]`, wantErr: true},
		{in: `{"a":1}`, wantErr: true},
		{in: `["unterminated]`, wantErr: true},
		{in: `["x"1]`, wantErr: true},
		{in: `[1,2]`, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			name, args, err := EventName([]byte(tt.in))
			if tt.wantErr {
				if err == nil {
					t.Fatalf("got %q %q, want an error", name, args)
				}
				return
			}
			if err != nil || string(name) != tt.name || string(args) != tt.args {
				t.Errorf("got %q %q %v, want %q %q", name, args, err, tt.name, tt.args)
			}
		})
	}
}

func TestStringField(t *testing.T) {
	payload := []byte(`{"event_id":"e1","event_title":"bench:1732590000123456789","changed":["title"],"note":"say \"hi\""}`)
	tests := []struct {
		key, want string
		ok        bool
	}{
		{"event_title", "bench:1732590000123456789", true},
		{"event_id", "e1", true},
		{"note", `say \"hi\"`, true},
		{"changed", "", false}, // not a string
		{"missing", "", false},
	}
	for _, tt := range tests {
		got, ok := StringField(payload, tt.key)
		if ok != tt.ok || string(got) != tt.want {
			t.Errorf("%s: got %q %v, want %q %v", tt.key, got, ok, tt.want, tt.ok)
		}
	}
	if _, ok := StringField([]byte(`{"k":"unterminated`), "k"); ok {
		t.Error("unterminated value found")
	}
}

func TestAppendConnect(t *testing.T) {
	if got := string(AppendConnect(nil, "a.b.c")); got != `40{"token":"a.b.c"}` {
		t.Errorf("got %s", got)
	}
	if got := string(AppendConnect(nil, "")); got != `40` {
		t.Errorf("got %s", got)
	}
}

func BenchmarkParseEvent(b *testing.B) {
	frame := []byte(`42["event:updated",{"event_id":"00000000-0001-4000-a000-000000000005","event_title":"bench:1732590000123456789","event_calendar_id":"00000000-0000-4000-9000-000000000005","changed":["title"]},"000000000169A3F8-0002"]`)
	b.ReportAllocs()
	for b.Loop() {
		p, err := ParseSocket(frame[1:])
		if err != nil {
			b.Fatal(err)
		}
		_, args, err := EventName(p.Data)
		if err != nil {
			b.Fatal(err)
		}
		if _, ok := StringField(args, "event_title"); !ok {
			b.Fatal("no title")
		}
	}
}
