package derive

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/koordi/koordi-realtime/cdc/wal"
	"github.com/koordi/koordi-realtime/schema"
)

// FuzzEmitMessage feeds arbitrary emit message content to the validator:
// it must never panic, and whatever it accepts must be a valid envelope.
func FuzzEmitMessage(f *testing.F) {
	f.Add([]byte(`{"room": "calendar:` + C1 + `", "event": "event:reminder", "data": {"minutes": 15}}`))
	f.Add([]byte(`{"room": "user:` + U1 + `", "event": "x", "data": null}`))
	f.Add([]byte(`{"room": "user:` + U1 + `", "event": "connect", "data": 1}`))
	f.Add([]byte(`{"room": "user:nope", "event": "x", "data": 1}`))
	f.Add([]byte(`[]`))
	f.Add([]byte(`{`))
	f.Fuzz(func(t *testing.T, content []byte) {
		room, event, data, reason := parseEmit(content)
		if reason != "" {
			return
		}
		if _, _, err := schema.ParseRoom(room); err != nil {
			t.Fatalf("accepted bad room %q", room)
		}
		if !saneEventName(event) {
			t.Fatalf("accepted bad event %q", event)
		}
		if !json.Valid(data) {
			t.Fatalf("accepted invalid data %q", data)
		}
	})
}

// fuzzColumns is the union of the watched tables' columns. A fuzzed tuple is
// "|"-separated values for these columns in order: "~" is NULL and a short
// tuple leaves the remaining columns absent (dropped).
var fuzzColumns = []string{
	"id", "event_calendar_id", "title", "assigned_to_user_id", "is_skipped", "start_time",
	"end_time", "description", "user_id", "status", "invited_email", "invited_by_user_id",
	"name", "email", "sync_in_progress", "last_sync_at", "last_sync_status", "last_sync_error",
	"parent_event_id", "type", "color", "is_cancelled",
}

var fuzzTables = []string{tableUsers, tableCalendars, tableMemberships, tableEvents, tableSupplemental, "children"}

func fuzzRow(s string) wal.Row {
	if s == "" {
		return wal.Row{}
	}
	r := map[string]wal.Value{}
	for i, v := range strings.Split(s, "|") {
		if i >= len(fuzzColumns) {
			break
		}
		if v == "~" {
			r[fuzzColumns[i]] = wal.Value{}
		} else {
			r[fuzzColumns[i]] = wal.Value{Text: v, Valid: true}
		}
	}
	return wal.RowOf(r)
}

// FuzzDerive derives a transaction of one fuzzed row change (any table, any
// op, arbitrary values, missing columns) and one emit message against the
// base state, twice: it must never panic, offsets must be consecutive and
// every envelope must carry valid JSON.
func FuzzDerive(f *testing.F) {
	ev := strings.Join([]string{E1, C1, "Practice", U1, "f", "2026-11-28 09:30:00+00", "2026-11-28 11:00:00+00"}, "|")
	f.Add(uint8(3), uint8(1), ev, strings.Replace(ev, "|f|", "|t|", 1), []byte(`{"room":"user:`+U1+`","event":"x","data":{}}`))
	f.Add(uint8(3), uint8(1), ev, strings.Replace(ev, C1, C2, 1), []byte(`nope`))
	f.Add(uint8(2), uint8(2), strings.Join([]string{M2, C1, "~", "~", "~", "~", "~", "~", U2, "accepted"}, "|"), "", []byte(nil))
	f.Add(uint8(2), uint8(0), "", strings.Join([]string{M4, C2, "", "", "", "", "", "", "~", "pending", "carol@example.com", U1}, "|"), []byte(nil))
	f.Add(uint8(1), uint8(1), C1+"|||||||||||||Soccer||f|~|pending", C1+"|||||||||||||Soccer||t|x|success", []byte(nil))
	f.Add(uint8(4), uint8(2), S1+"|||||||||||||||||||"+E1+"|return", "", []byte(nil))
	f.Add(uint8(0), uint8(1), U2+"|", U2+"||||||||||||Robert|r@example.com", []byte(nil))
	f.Fuzz(func(t *testing.T, table, op uint8, oldS, newS string, message []byte) {
		c := wal.Change{Table: fuzzTables[int(table)%len(fuzzTables)], Old: fuzzRow(oldS), New: fuzzRow(newS)}
		switch op % 3 {
		case 0:
			c.Op = wal.OpInsert
		case 1:
			c.Op = wal.OpUpdate
		case 2:
			c.Op = wal.OpDelete
		}
		// A return of E2 deleted alongside gives conflict pairing something to chew on.
		changes := []wal.Change{c, del(tableSupplemental, suppRow(S3, E2, "return")), {Op: wal.OpMessage, Message: message}}
		for range 2 {
			d := New(Config{})
			if err := d.Bootstrap(context.Background(), baseQuerier()); err != nil {
				t.Fatal(err)
			}
			tx := d.Derive(&wal.Tx{CommitLSN: 42, Changes: changes})
			if len(tx.Events) > 0 {
				// Whatever the rows, the transaction is one other nodes accept.
				b, err := json.Marshal(tx)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := schema.DecodeTransaction(b); err != nil {
					t.Fatalf("derived transaction refused by its decoder: %v\n%s", err, b)
				}
			}
			for i, e := range tx.Events {
				if e.Offset != (schema.Offset{LSN: 42, Index: uint32(i)}) {
					t.Fatalf("envelope %d has offset %v", i, e.Offset)
				}
				if !json.Valid(e.Data) {
					t.Fatalf("envelope %d: invalid JSON %q", i, e.Data)
				}
				if _, _, err := schema.ParseRoom(e.Room); err != nil || e.Event == "" {
					t.Fatalf("envelope %d: bad room or event: %+v", i, e)
				}
			}
		}
	})
}
