package schema_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/koordi/koordi-realtime/schema"
)

const (
	testUser = "6f1c2b7e-3a4d-4e5f-8a9b-0c1d2e3f4a5b"
	testCal  = "0b9a8c7d-6e5f-4a3b-8c2d-1e0f9a8b7c6d"
)

// sampleTransaction is a membership accepted, an event of the calendar, and
// the calendar deleted, with the moves derivation attaches.
func sampleTransaction() schema.Transaction {
	const lsn = 0x169A3F8
	room := schema.CalendarRoom(testCal)
	return schema.Transaction{
		CommitLSN:  lsn,
		CommitTime: time.Date(2026, 11, 26, 17, 0, 0, 123456000, time.UTC),
		Xid:        731,
		Events: []schema.Envelope{
			{Offset: schema.Offset{LSN: lsn, Index: 0}, Room: room, Event: schema.MemberAdded,
				Data: json.RawMessage(`{"calendar_id":"` + testCal + `","user_id":"` + testUser + `","user_email":"a@example.com","user_name":"Alex <A&B>"}`)},
			{Offset: schema.Offset{LSN: lsn, Index: 1}, Room: room, Event: schema.EventCreated,
				Data: json.RawMessage(`{"event_id":"e","event_title":"Practice","event_calendar_id":"` + testCal + `"}`)},
			{Offset: schema.Offset{LSN: lsn, Index: 2}, Room: room, Event: schema.CalendarDeleted,
				Data: json.RawMessage(`{"calendar_id":"` + testCal + `","calendar_name":"Soccer"}`)},
		},
		Moves: []schema.Move{
			{At: 0, Op: schema.MoveJoin, User: testUser, Room: room},
			{At: 3, Op: schema.MoveClose, Room: room},
		},
	}
}

// TestTransactionJSONGolden pins the wire form of a transaction: other nodes
// decode it, so a change must fail here first.
func TestTransactionJSONGolden(t *testing.T) {
	tx := sampleTransaction()
	got, err := json.Marshal(tx)
	if err != nil {
		t.Fatal(err)
	}
	got = append(got, '\n')
	golden := filepath.Join("testdata", "transaction.golden")
	if *update {
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run with -update to create)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("transaction JSON changed:\ngot:  %s\nwant: %s", got, want)
	}
	back, err := schema.DecodeTransaction(want)
	if err != nil {
		t.Fatal(err)
	}
	for i := range back.Events {
		if !jsonEqual(back.Events[i].Data, tx.Events[i].Data) {
			t.Errorf("event %d data %s, want %s", i, back.Events[i].Data, tx.Events[i].Data)
		}
		back.Events[i].Data = tx.Events[i].Data
	}
	if !reflect.DeepEqual(back, tx) {
		t.Errorf("decoded golden differs:\ngot:  %+v\nwant: %+v", back, tx)
	}
	// Each event inside is exactly what tail prints for it.
	line, _ := json.Marshal(tx.Events[1])
	if !bytes.Contains(want, line) {
		t.Errorf("event %s not embedded as tail prints it", line)
	}
}

func TestTransactionJSONOmitsEmpty(t *testing.T) {
	b, err := json.Marshal(schema.Transaction{CommitLSN: 1, CommitTime: time.Unix(0, 0)})
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"commit_lsn":"0000000000000001","commit_time":"1970-01-01T00:00:00Z","events":[]}`; string(b) != want {
		t.Fatalf("got %s, want %s", b, want)
	}
}

func TestTransactionJSONRejects(t *testing.T) {
	base, _ := json.Marshal(sampleTransaction())
	edit := func(old, new string) string {
		if !strings.Contains(string(base), old) {
			t.Fatalf("sample has no %q", old)
		}
		return strings.Replace(string(base), old, new, 1)
	}
	tests := map[string]string{
		"not json":            `{`,
		"array":               `[]`,
		"short lsn":           edit(`"commit_lsn":"000000000169A3F8"`, `"commit_lsn":"169A3F8"`),
		"signed lsn":          edit(`"commit_lsn":"000000000169A3F8"`, `"commit_lsn":"+00000000169A3F8"`),
		"foreign offset":      edit(`"offset":"000000000169A3F8-00000001"`, `"offset":"000000000169A3F9-00000001"`),
		"offset backwards":    edit(`"offset":"000000000169A3F8-00000001"`, `"offset":"000000000169A3F8-00000000"`),
		"bad offset":          edit(`"offset":"000000000169A3F8-00000001"`, `"offset":"nope"`),
		"bad room":            edit(`"room":"calendar:`+testCal+`","event":"event:created"`, `"room":"team:x","event":"event:created"`),
		"empty event":         edit(`"event":"event:created"`, `"event":""`),
		"reserved event":      edit(`"event":"event:created"`, `"event":"connect"`),
		"long event":          edit(`"event":"event:created"`, `"event":"`+strings.Repeat("x", schema.MaxEventName+1)+`"`),
		"bad data":            edit(`"data":{"event_id"`, `"data":{event_id"`),
		"unknown op":          edit(`"op":"join"`, `"op":"teleport"`),
		"move past events":    edit(`"at":3`, `"at":4`),
		"negative move":       edit(`"at":0`, `"at":-1`),
		"moves out of order":  edit(`"at":3`, `"at":0}],"x":[{"at":3`),
		"join without user":   edit(`"user":"`+testUser+`",`, ``),
		"close with user":     edit(`"op":"close",`, `"op":"close","user":"`+testUser+`",`),
		"join of a user room": edit(`"op":"join","user":"`+testUser+`","room":"calendar:`, `"op":"join","user":"`+testUser+`","room":"user:`),
		"bad user":            edit(`"user":"`+testUser+`"`, `"user":"alex"`),
	}
	// moves out of order needs a real reordering: two moves, the second before the first.
	tests["moves out of order"] = strings.Replace(string(base), `"moves":[`, `"moves":[{"at":2,"op":"close","room":"calendar:`+testCal+`"},`, 1)
	for name, in := range tests {
		_, err := schema.DecodeTransaction([]byte(in))
		if !errors.Is(err, schema.ErrBadTransaction) {
			t.Errorf("%s: err = %v, want ErrBadTransaction", name, err)
		}
	}
}

// FuzzTransactionJSON: the decoder never panics, and whatever it accepts
// encodes to a form it accepts again, unchanged.
func FuzzTransactionJSON(f *testing.F) {
	base, _ := json.Marshal(sampleTransaction())
	f.Add(base)
	f.Add([]byte(`{"commit_lsn":"0000000000000001","commit_time":"1970-01-01T00:00:00Z","events":[]}`))
	f.Add([]byte(`{"commit_lsn":"0000000000000001","events":[{"offset":"0000000000000001-0000","room":"user:` + testUser + `","event":"x","data":1}],"moves":[{"at":1,"op":"leave","user":"` + testUser + `","room":"calendar:` + testCal + `"}]}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, in []byte) {
		tx, err := schema.DecodeTransaction(in)
		if err != nil {
			return
		}
		out, err := json.Marshal(tx)
		if err != nil {
			t.Fatalf("accepted %q but cannot encode it: %v", in, err)
		}
		back, err := schema.DecodeTransaction(out)
		if err != nil {
			t.Fatalf("re-encoded %q is refused: %v", out, err)
		}
		again, _ := json.Marshal(back)
		if !bytes.Equal(out, again) {
			t.Fatalf("encoding is not stable:\n%s\n%s", out, again)
		}
	})
}

func TestUUID(t *testing.T) {
	u, ok := schema.ParseUUID(strings.ToUpper(testUser))
	if !ok || u.String() != testUser {
		t.Fatalf("ParseUUID(upper) = %v, %v; want %s", u, ok, testUser)
	}
	for _, s := range []string{"", testUser + "0", strings.ReplaceAll(testUser, "-", "_"), "g" + testUser[1:], testUser[:35] + "-",
		// Dashes where hex digits belong (once an index out of range:
		// found by FuzzEmitMessage and FuzzDerive).
		"00000000-0000-0000-0000-000000-00000", "00000000-0000-0000-0000-0000000000-0", "00000000-0000-0000-0000--00000000000"} {
		if _, ok := schema.ParseUUID(s); ok || schema.IsUUID(s) {
			t.Errorf("%q accepted", s)
		}
	}
}

// FuzzParseUUID: a uuid comes from clients (join:calendar), tokens and SQL;
// anything accepted must round-trip in the lower-case canonical form.
func FuzzParseUUID(f *testing.F) {
	f.Add(testUser)
	f.Add(strings.ToUpper(testUser))
	f.Add("00000000-0000-0000-0000-000000-00000")
	f.Fuzz(func(t *testing.T, s string) {
		u, ok := schema.ParseUUID(s)
		if !ok {
			return
		}
		if u.String() != strings.ToLower(s) {
			t.Fatalf("%q parsed as %s", s, u)
		}
	})
}

func jsonEqual(a, b json.RawMessage) bool {
	var x, y any
	return json.Unmarshal(a, &x) == nil && json.Unmarshal(b, &y) == nil && reflect.DeepEqual(x, y)
}
