package derive_test

import (
	"encoding/json"
	"fmt"
	"maps"
	"time"

	"github.com/koordi/koordi-realtime/cdc/derive"
	"github.com/koordi/koordi-realtime/cdc/wal"
)

// An UPDATE that assigns an event and renames it derives two events,
// the assignment first, numbered within the transaction.
func ExampleDeriver_Derive() {
	d := derive.New(derive.Config{})
	v := func(s string) wal.Value { return wal.Value{Text: s, Valid: true} }
	old := map[string]wal.Value{
		"id":                  v("4a1e0000-0000-4000-8000-000000000001"),
		"event_calendar_id":   v("ca1e0000-0000-4000-8000-000000000001"),
		"title":               v("Practice"),
		"start_time":          v("2026-11-28 09:30:00+00"),
		"end_time":            v("2026-11-28 11:00:00+00"),
		"is_skipped":          v("f"),
		"assigned_to_user_id": {},
		"version":             v("1"),
	}
	upd := maps.Clone(old)
	upd["assigned_to_user_id"] = v("05e70000-0000-4000-8000-000000000001")
	upd["title"] = v("Practice (Field 4)")
	upd["version"] = v("2") // bookkeeping: no event of its own

	tx := &wal.Tx{
		CommitLSN:  0x169A3F8,
		CommitTime: time.Date(2026, 11, 26, 1, 0, 0, 0, time.UTC),
		Changes:    []wal.Change{{Op: wal.OpUpdate, Table: "events", Old: wal.RowOf(old), OldFull: true, New: wal.RowOf(upd)}},
	}
	for _, e := range d.Derive(tx).Events {
		line, _ := json.Marshal(e)
		fmt.Println(string(line))
	}
	// Output:
	// {"offset":"000000000169A3F8-00000000","room":"calendar:ca1e0000-0000-4000-8000-000000000001","event":"event:assigned","data":{"event_id":"4a1e0000-0000-4000-8000-000000000001","event_title":"Practice (Field 4)","assigned_to_user_id":"05e70000-0000-4000-8000-000000000001","previous_assigned_to_user_id":null,"is_skipped":false,"start_time":"2026-11-28T09:30:00.000Z","end_time":"2026-11-28T11:00:00.000Z","event_calendar_id":"ca1e0000-0000-4000-8000-000000000001"}}
	// {"offset":"000000000169A3F8-00000001","room":"calendar:ca1e0000-0000-4000-8000-000000000001","event":"event:updated","data":{"event_id":"4a1e0000-0000-4000-8000-000000000001","event_title":"Practice (Field 4)","event_calendar_id":"ca1e0000-0000-4000-8000-000000000001","changed":["title"]}}
}
