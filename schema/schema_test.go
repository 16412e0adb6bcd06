package schema_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/koordi/koordi-realtime/schema"
)

var update = flag.Bool("update", false, "rewrite golden files")

func TestOffsetStringAndParse(t *testing.T) {
	tests := []struct {
		off  schema.Offset
		want string
	}{
		{schema.Offset{LSN: 0x169A3F8, Index: 2}, "000000000169A3F8-00000002"},
		{schema.Offset{LSN: 0, Index: 1}, "0000000000000000-00000001"},
		{schema.Offset{LSN: 0x169A3F8, Index: 70000}, "000000000169A3F8-00011170"},
		{schema.Offset{LSN: ^uint64(0), Index: 0xFFFFFFFF}, "FFFFFFFFFFFFFFFF-FFFFFFFF"},
	}
	for _, tt := range tests {
		if got := tt.off.String(); got != tt.want {
			t.Errorf("%+v.String() = %q, want %q", tt.off, got, tt.want)
		}
		back, err := schema.ParseOffset(tt.want)
		if err != nil || back != tt.off {
			t.Errorf("ParseOffset(%q) = %+v, %v; want %+v", tt.want, back, err, tt.off)
		}
		lower, err := schema.ParseOffset(strings.ToLower(tt.want))
		if err != nil || lower != tt.off {
			t.Errorf("ParseOffset(lower %q) = %+v, %v", tt.want, lower, err)
		}
	}
}

// Offsets written before the index widened to 8 digits still parse: a client
// may hold one across an upgrade.
func TestParseLegacyOffset(t *testing.T) {
	got, err := schema.ParseOffset("000000000169A3F8-0002")
	if want := (schema.Offset{LSN: 0x169A3F8, Index: 2}); err != nil || got != want {
		t.Fatalf("ParseOffset(legacy) = %+v, %v; want %+v", got, err, want)
	}
	if got.String() != "000000000169A3F8-00000002" {
		t.Fatalf("legacy offset prints as %q", got.String())
	}
}

func TestParseOffsetRejects(t *testing.T) {
	for _, s := range []string{"", "0", "000000000169A3F8", "000000000169A3F8-002", "000000000169A3F8_0002",
		"00000000016 A3F8-0002", "000000000169A3F8-000G", "+00000000169A3F8-0002", "000000000169A3F8-0002x",
		"000000000169A3F8-0000000", "000000000169A3F8-000000002", "000000000169A3F8-+0000002", "000000000169A3F8-0000_002"} {
		if _, err := schema.ParseOffset(s); err == nil {
			t.Errorf("ParseOffset(%q) accepted", s)
		}
	}
}

// Offsets are compared as strings by clients and as values by the server:
// both orders must agree.
func TestOffsetOrderMatchesStringOrder(t *testing.T) {
	offs := []schema.Offset{{LSN: 1}, {LSN: 1, Index: 1}, {LSN: 0xF, Index: 0}, {LSN: 0x10}, {LSN: 0x10, Index: 0x10},
		{LSN: 0x10, Index: 0x10000}, {LSN: 1 << 40}}
	for i := range offs {
		for j := range offs {
			byValue := offs[i].Compare(offs[j])
			byString := strings.Compare(offs[i].String(), offs[j].String())
			if byValue != byString {
				t.Errorf("%v vs %v: Compare=%d, string compare=%d", offs[i], offs[j], byValue, byString)
			}
		}
	}
}

func FuzzParseOffset(f *testing.F) {
	for _, s := range []string{"000000000169A3F8-00000002", "000000000169A3F8-0002", "", "FFFFFFFFFFFFFFFF-FFFFFFFF", "zz"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		off, err := schema.ParseOffset(s)
		if err != nil {
			return
		}
		printed := off.String()
		if len(s) == len(printed) && !strings.EqualFold(printed, s) {
			t.Fatalf("ParseOffset(%q) = %v, which prints differently", s, off)
		}
		if back, err := schema.ParseOffset(printed); err != nil || back != off {
			t.Fatalf("%q does not parse back: %v, %v", printed, back, err)
		}
	})
}

func TestParseRoom(t *testing.T) {
	const id = "6f1c2b7e-3a4d-4e5f-8a9b-0c1d2e3f4a5b"
	tests := []struct {
		room   string
		kind   schema.RoomKind
		wantID string
		ok     bool
	}{
		{schema.UserRoom(id), schema.RoomUser, id, true},
		{schema.CalendarRoom(id), schema.RoomCalendar, id, true},
		{"calendar:" + strings.ToUpper(id), schema.RoomCalendar, strings.ToUpper(id), true},
		{"calendar:", 0, "", false},
		{"calendar:not-a-uuid", 0, "", false},
		{"team:" + id, 0, "", false},
		{"user:" + id + "x", 0, "", false},
		{"user:" + strings.ReplaceAll(id, "-", "_"), 0, "", false},
	}
	for _, tt := range tests {
		kind, gotID, err := schema.ParseRoom(tt.room)
		if (err == nil) != tt.ok || kind != tt.kind || gotID != tt.wantID {
			t.Errorf("ParseRoom(%q) = %v, %q, %v; want %v, %q, ok=%v", tt.room, kind, gotID, err, tt.kind, tt.wantID, tt.ok)
		}
	}
}

// TestPayloadFieldNames pins the JSON of every payload: Koordi's front end
// reads these exact names, so a rename must fail here first.
func TestPayloadFieldNames(t *testing.T) {
	user := "11111111-1111-4111-8111-111111111111"
	prev := "22222222-2222-4222-8222-222222222222"
	payloads := []struct {
		event   string
		payload any
	}{
		{schema.EventCreated, schema.EventRef{EventID: "e", EventTitle: "Practice", EventCalendarID: "c"}},
		{schema.EventAssigned, schema.EventAssignment{EventID: "e", EventTitle: "Practice", AssignedToUserID: &user,
			PreviousAssignedToUserID: &prev, StartTime: "2026-11-26T17:00:00Z", EndTime: "2026-11-26T18:30:00Z", EventCalendarID: "c"}},
		{schema.EventUnassigned, schema.EventAssignment{EventID: "e", EventTitle: "Practice", IsSkipped: true,
			PreviousAssignedToUserID: &user, StartTime: "2026-11-26T17:00:00Z", EndTime: "2026-11-26T18:30:00Z", EventCalendarID: "c"}},
		{schema.EventUpdated, schema.EventChange{EventID: "e", EventTitle: "Practice", EventCalendarID: "c", Changed: []string{"title", "location"}}},
		{schema.EventDeleted, schema.EventRef{EventID: "e", EventTitle: "Practice", EventCalendarID: "c"}},
		{schema.MemberAdded, schema.Member{CalendarID: "c", UserID: user, UserEmail: "a@example.com", UserName: "Alex"}},
		{schema.MemberRemoved, schema.Member{CalendarID: "c", UserID: user, UserEmail: "a@example.com", UserName: "Alex"}},
		{schema.InvitationReceived, schema.Invitation{CalendarID: "c", CalendarName: "Soccer", InviterName: "Sam", InvitedEmail: "a@example.com"}},
		{schema.CalendarSynced, schema.CalendarSync{CalendarID: "c", CalendarName: "Soccer", EventsCreated: 3, EventsUpdated: 2, EventsDeleted: 1}},
		{schema.CalendarSyncFailed, schema.CalendarSyncFailure{CalendarID: "c", CalendarName: "Soccer", Error: "404 from ICS feed"}},
		{schema.CalendarUpdated, schema.CalendarChange{CalendarID: "c", CalendarName: "Soccer", Changed: []string{"name"}}},
		{schema.CalendarDeleted, schema.CalendarRef{CalendarID: "c", CalendarName: "Soccer"}},
		{schema.ConflictResolved, schema.Conflict{Event1ID: "a", Event2ID: "b", Reason: "same_location"}},
		{schema.SyncReset, schema.Reset{Reason: "replication slot was recreated"}},
		// Changes derived inside a calendar's sync window carry "sync": true
		// (omitted when false, as above).
		{schema.EventCreated, schema.EventRef{EventID: "e", EventTitle: "Practice", EventCalendarID: "c", Sync: true}},
		{schema.EventUnassigned, schema.EventAssignment{EventID: "e", EventTitle: "Practice", PreviousAssignedToUserID: &user,
			StartTime: "2026-11-26T17:00:00Z", EndTime: "2026-11-26T18:30:00Z", EventCalendarID: "c", Sync: true}},
		{schema.EventUpdated, schema.EventChange{EventID: "e", EventTitle: "Practice", EventCalendarID: "c", Changed: []string{"start_time"}, Sync: true}},
	}
	var got bytes.Buffer
	var seen []string
	for i, p := range payloads {
		env, err := schema.NewEnvelope(schema.Offset{LSN: 0x169A3F8, Index: uint32(i)}, "calendar:c", p.event, p.payload)
		if err != nil {
			t.Fatal(err)
		}
		line, err := json.Marshal(env)
		if err != nil {
			t.Fatal(err)
		}
		got.Write(line)
		got.WriteByte('\n')
		seen = append(seen, p.event)
	}
	for _, name := range schema.Names {
		if !slices.Contains(seen, name) {
			t.Errorf("event %s has no payload in this test", name)
		}
	}
	golden := filepath.Join("testdata", "payloads.golden")
	if *update {
		if err := os.WriteFile(golden, got.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run with -update to create)", err)
	}
	if !bytes.Equal(got.Bytes(), want) {
		t.Errorf("payload JSON changed:\ngot:\n%s\nwant:\n%s", got.Bytes(), want)
	}
}

func TestTxSnapshotVisible(t *testing.T) {
	snap, err := schema.ParseTxSnapshot("100:110:103,107")
	if err != nil {
		t.Fatal(err)
	}
	for xid, want := range map[uint32]bool{5: true, 99: true, 100: true, 103: false, 105: true, 107: false, 109: true, 110: false, 500: false} {
		if got := snap.Visible(xid); got != want {
			t.Errorf("Visible(%d) = %v, want %v", xid, got, want)
		}
	}
	// Across an epoch: the snapshot at 2^32+10; xid 4294967290 is from the
	// previous epoch (visible), xid 20 from this one (not started yet).
	wrap := schema.TxSnapshot{Xmin: 1<<32 + 5, Xmax: 1<<32 + 10}
	if !wrap.Visible(4294967290) || wrap.Visible(20) || !wrap.Visible(3) {
		t.Errorf("epoch widening wrong: %v %v %v", wrap.Visible(4294967290), wrap.Visible(20), wrap.Visible(3))
	}
	for _, bad := range []string{"", "1:2", "a:2:", "5:3:", "1:2:x", "1:2:3:4"} {
		if _, err := schema.ParseTxSnapshot(bad); err == nil {
			t.Errorf("ParseTxSnapshot(%q) accepted", bad)
		}
	}
	if s, err := schema.ParseTxSnapshot("7:9:"); err != nil || len(s.Xip) != 0 || !s.Visible(6) {
		t.Errorf("empty xip: %+v, %v", s, err)
	}
}
