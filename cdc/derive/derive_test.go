package derive

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/koordi/koordi-realtime/cdc/wal"
	"github.com/koordi/koordi-realtime/schema"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// Short names for the tables in the cases below.
const (
	tU = tableUsers
	tC = tableCalendars
	tM = tableMemberships
	tE = tableEvents
	tS = tableSupplemental
)

type deriveCase struct {
	name string
	txs  [][]wal.Change
	// want lists "<room> <event>" for every envelope of every transaction,
	// in order; rooms abbreviate ids to their names above (C1, U2, …).
	want []string
	// check runs after the last transaction, for state assertions.
	check func(t *testing.T, d *Deriver)
	// at gives each transaction's commit time in seconds after the base
	// time; without it transaction i commits at second i.
	at []int
}

var (
	e1 = eventRow(E1, C1, "Practice")
	e2 = eventRow(E2, C2, "Lesson")
	c1 = calendarRow(C1, "Soccer")
	c2 = calendarRow(C2, "Piano")
)

func deriveCases() []deriveCase {
	return []deriveCase{
		// ---- 4.1 events ----
		{name: "event_insert", txs: [][]wal.Change{{ins(tE, eventRow(E3, C1, "Match"))}},
			want: []string{"C1 event:created"}},
		{name: "event_insert_assigned", txs: [][]wal.Change{{ins(tE, eventRow(E3, C1, "Match", "assigned_to_user_id", U1))}},
			want: []string{"C1 event:created", "C1 event:assigned"}},
		{name: "event_assign", txs: [][]wal.Change{{upd(tE, e1, with(e1, "assigned_to_user_id", U1, "version", "2"))}},
			want: []string{"C1 event:assigned"}},
		{name: "event_unassign", txs: [][]wal.Change{{upd(tE, with(e1, "assigned_to_user_id", U1), e1)}},
			want: []string{"C1 event:unassigned"}},
		{name: "event_reassign", txs: [][]wal.Change{{upd(tE, with(e1, "assigned_to_user_id", U1), with(e1, "assigned_to_user_id", U2))}},
			want: []string{"C1 event:assigned"}},
		{name: "event_skip", txs: [][]wal.Change{{upd(tE, with(e1, "assigned_to_user_id", U1), with(e1, "assigned_to_user_id", U1, "is_skipped", "t"))}},
			want: []string{"C1 event:assigned"}},
		{name: "event_skip_unassigned", txs: [][]wal.Change{{upd(tE, e1, with(e1, "is_skipped", "t"))}},
			want: []string{"C1 event:unassigned"}},
		{name: "event_details", txs: [][]wal.Change{{upd(tE, e1, with(e1, "location", "Field 4", "title", "Practice!", "start_time", "2026-11-28 10:00:00.5+01"))}},
			want: []string{"C1 event:updated"}},
		{name: "event_every_detail", txs: [][]wal.Change{{upd(tE, e1, with(e1,
			"title", "T", "description", "D", "location", "L", "start_time", "2026-11-29 09:30:00+00",
			"end_time", "2026-11-29 11:00:00+00", "is_all_day", "t", "is_cancelled", "t"))}},
			want: []string{"C1 event:updated"}},
		{name: "event_assignment_and_details", txs: [][]wal.Change{{upd(tE, e1, with(e1, "assigned_to_user_id", U2, "title", "Practice (moved)", "version", "3"))}},
			want: []string{"C1 event:assigned", "C1 event:updated"}},
		{name: "event_bookkeeping_only", txs: [][]wal.Change{{
			upd(tE, e1, with(e1, "updated_at", "2026-11-26 02:00:00+00", "version", "2", "sync_in_progress", "t", "last_modified", "2026-11-26 02:00:00+00")),
			upd(tE, with(e1, "brand_new_column", "a"), with(e1, "brand_new_column", "b", "location_lat", "52.5", "ics_uid", "x")),
		}}, want: nil},
		{name: "event_move", txs: [][]wal.Change{{upd(tE, e1, with(e1, "event_calendar_id", C2, "assigned_to_user_id", U2))}},
			want: []string{"C1 event:deleted", "C2 event:created"},
			check: func(t *testing.T, d *Deriver) {
				if cal, _ := d.st.eventCalendar(mustUID(E1)); cal.String() != C2 {
					t.Errorf("index: E1 in %s, want %s", cal, C2)
				}
			}},
		{name: "event_delete", txs: [][]wal.Change{{del(tE, with(e1, "assigned_to_user_id", U1))}},
			want: []string{"C1 event:deleted"},
			check: func(t *testing.T, d *Deriver) {
				if _, ok := d.st.eventCalendar(mustUID(E1)); ok {
					t.Error("deleted event still indexed")
				}
			}},
		{name: "event_dropped_columns", txs: [][]wal.Change{
			{upd(tE, without(e1, "title", "description", "is_skipped"), without(with(e1, "assigned_to_user_id", U1, "location", "Gym"), "title", "description", "is_skipped"))},
			{ins(tE, row("id", E3, "event_calendar_id", C1))},
			{upd(tE, row("id", E3), row("id", E3, "title", "x"))},
			{del(tE, row("id", E3))},
		}, want: []string{"C1 event:assigned", "C1 event:updated", "C1 event:created", "C1 event:deleted"}},
		{name: "event_without_calendar", txs: [][]wal.Change{{ins(tE, row("id", E3)), upd(tE, row("id", E4), row("id", E4)), del(tE, row("id", tid(4, 99)))}},
			want: nil},

		// ---- 4.2 memberships ----
		{name: "member_insert_accepted", txs: [][]wal.Change{{ins(tM, memberRowOf(M4, C2, U3, "carol@example.com", "accepted"))}},
			want: []string{"join U3 C2", "C2 member:added"},
			check: func(t *testing.T, d *Deriver) {
				if !d.State().IsAcceptedMember(U3, C2) {
					t.Error("U3 not an accepted member of C2")
				}
			}},
		{name: "member_pending_to_accepted", txs: [][]wal.Change{
			{ins(tM, memberRowOf(M4, C2, null, "Carol@Example.com", "pending"))},
			{upd(tM, memberRowOf(M4, C2, null, "Carol@Example.com", "pending"), memberRowOf(M4, C2, U3, "Carol@Example.com", "accepted"))},
		}, want: []string{"U3 invitation:received", "join U3 C2", "C2 member:added"}},
		{name: "member_accepted_deleted", txs: [][]wal.Change{{del(tM, memberRowOf(M2, C1, U2, "bob@example.com", "accepted"))}},
			want: []string{"leave U2 C1", "C1 member:removed", "U2 member:removed"},
			check: func(t *testing.T, d *Deriver) {
				if d.State().IsAcceptedMember(U2, C1) {
					t.Error("U2 still a member of C1")
				}
				if got := d.State().AcceptedCalendars(U2); len(got) != 1 || got[0] != C2 {
					t.Errorf("AcceptedCalendars(U2) = %v, want [C2]", got)
				}
			}},
		{name: "member_key_only_delete", txs: [][]wal.Change{{del(tM, row("id", M2))}},
			want: []string{"leave U2 C1", "C1 member:removed", "U2 member:removed"}},
		{name: "member_accepted_to_declined", txs: [][]wal.Change{{upd(tM, memberRowOf(M2, C1, U2, "bob@example.com", "accepted"), memberRowOf(M2, C1, U2, "bob@example.com", "declined"))}},
			want: []string{"leave U2 C1", "C1 member:removed", "U2 member:removed"}},
		{name: "member_pending_deleted", txs: [][]wal.Change{{del(tM, memberRowOf(M4, C2, null, "carol@example.com", "pending"))}},
			want: nil},
		{name: "invitation_unknown_email", txs: [][]wal.Change{{ins(tM, memberRowOf(M4, C2, null, "nobody@example.com", "pending"))}},
			want: nil},
		// Emails match exactly, as in Koordi: an invitation to
		// CAROL@example.COM is not Carol@Example.com's, who could not
		// accept it; one to her exact address is.
		{name: "invitation_email_exact", txs: [][]wal.Change{
			{ins(tM, memberRowOf(M4, C1, null, "CAROL@example.COM", "pending", "invited_by_user_id", U2))},
			{ins(tM, memberRowOf(tid(3, 6), C2, null, "Carol@Example.com", "pending", "invited_by_user_id", U2))},
		}, want: []string{"U3 invitation:received"}},
		{name: "invitation_user_created_same_tx", txs: [][]wal.Change{{
			ins(tM, memberRowOf(M4, C1, null, "dave@example.com", "pending")),
			ins(tU, userRow(U4, "Dave", "dave@example.com")),
		}}, want: []string{"U4 invitation:received"}},
		{name: "rename_then_remove_one_tx", txs: [][]wal.Change{{
			upd(tU, userRow(U2, "Bob", "bob@example.com"), userRow(U2, "Robert", "robert@example.com")),
			del(tM, memberRowOf(M2, C1, U2, "bob@example.com", "accepted")),
		}}, want: []string{"leave U2 C1", "C1 member:removed", "U2 member:removed"}},
		{name: "remove_then_rename_one_tx", txs: [][]wal.Change{{
			del(tM, memberRowOf(M2, C1, U2, "bob@example.com", "accepted")),
			upd(tU, userRow(U2, "Bob", "bob@example.com"), userRow(U2, "Robert", "robert@example.com")),
		}}, want: []string{"leave U2 C1", "C1 member:removed", "U2 member:removed"}},
		{name: "rename_then_add_later_tx", txs: [][]wal.Change{
			{upd(tU, userRow(U3, "Carol", "Carol@Example.com"), userRow(U3, "Caroline", "carol@example.com"))},
			{ins(tM, memberRowOf(M4, C1, U3, "carol@example.com", "accepted"))},
		}, want: []string{"join U3 C1", "C1 member:added"}},
		{name: "user_deleted_cascade", txs: [][]wal.Change{{
			del(tU, userRow(U2, "Bob", "bob@example.com")),
			del(tM, memberRowOf(M2, C1, U2, "bob@example.com", "accepted")),
			del(tM, memberRowOf(M3, C2, U2, "bob@example.com", "accepted")),
		}}, want: []string{"leave U2 C1", "C1 member:removed", "U2 member:removed", "leave U2 C2", "C2 member:removed", "U2 member:removed"},
			check: func(t *testing.T, d *Deriver) {
				if _, ok := d.st.users[mustUID(U2)]; ok {
					t.Error("deleted user still in state")
				}
				if _, ok := d.st.byEmail["bob@example.com"]; ok {
					t.Error("deleted user's email still indexed")
				}
			}},

		{name: "member_update_without_old_tuple", txs: [][]wal.Change{
			{upd(tM, wal.Row{}, memberRowOf(M2, C1, U2, "bob@example.com", "accepted", "updated_at", "2026-11-26 02:00:00+00"))},
			{upd(tM, wal.Row{}, memberRowOf(M2, C1, U2, "bob@example.com", "declined"))},
		}, want: []string{"leave U2 C1", "C1 member:removed", "U2 member:removed"}},
		{name: "user_deleted_and_recreated_one_tx", txs: [][]wal.Change{
			{del(tU, userRow(U3, "Carol", "Carol@Example.com")), ins(tU, userRow(U3, "Carol Again", "carol@example.com"))},
			{ins(tM, memberRowOf(M4, C1, U3, "carol@example.com", "accepted"))},
		}, want: []string{"join U3 C1", "C1 member:added"}},

		// ---- 4.3 calendars ----
		{name: "calendar_updated", txs: [][]wal.Change{{upd(tC, c1, with(c1, "name", "Soccer Club", "color", "#FF0000", "updated_at", "2026-11-26 03:00:00+00"))}},
			want: []string{"C1 calendar:updated"}},
		{name: "calendar_bookkeeping_only", txs: [][]wal.Change{{upd(tC, c1, with(c1, "updated_at", "2026-11-26 03:00:00+00", "google_calendar_watch_token", "x"))}},
			want: nil},
		{name: "calendar_sync_window", txs: [][]wal.Change{
			{upd(tC, c1, with(c1, "sync_in_progress", "t"))},
			{ins(tE, eventRow(E3, C1, "New 1")), ins(tE, eventRow(E4, C1, "New 2")), ins(tE, eventRow(tid(4, 5), C2, "Other calendar"))},
			{upd(tE, e1, with(e1, "title", "Renamed")), upd(tE, eventRow(E3, C1, "New 1"), with(eventRow(E3, C1, "New 1"), "version", "2"))},
			{del(tE, eventRow(E4, C1, "New 2"))},
			{upd(tC, with(c1, "sync_in_progress", "t"), with(c1, "sync_in_progress", "f", "last_sync_at", "2026-11-26 01:30:00+00", "last_sync_status", "success"))},
			// A second sync without a window: counts come from its own transaction.
			{ins(tE, eventRow(tid(4, 6), C1, "Same tx")), upd(tC, with(c1, "last_sync_at", "2026-11-26 01:30:00+00", "last_sync_status", "success"), with(c1, "last_sync_at", "2026-11-26 02:30:00+00", "last_sync_status", "success")), del(tE, e1)},
		}, want: []string{
			"C1 event:created", "C1 event:created", "C2 event:created",
			"C1 event:updated",
			"C1 event:deleted",
			"C1 calendar:synced",
			"C1 event:created", "C1 calendar:synced", "C1 event:deleted",
		}},
		// Koordi's POST /api/calendars: the calendar created with its owner's
		// membership (one Prisma nested create), then syncCalendar
		// (icsSyncService.ts): sync_in_progress set, each event created in
		// its own statement, the outcome and sync_in_progress cleared in one
		// UPDATE. Every event change inside carries "sync": true; after the
		// window none does.
		{name: "calendar_first_sync", txs: [][]wal.Change{
			{ins(tC, calendarRow(C3, "Swim")), ins(tM, memberRowOf(M4, C3, U1, "alice@example.com", "accepted"))},
			{upd(tC, calendarRow(C3, "Swim"), calendarRow(C3, "Swim", "sync_in_progress", "t", "updated_at", "2026-11-26 01:00:01+00"))},
			{ins(tE, eventRow(E3, C3, "Swim meet", "location", null))},
			{ins(tE, eventRow(E4, C3, "Relay practice"))},
			{ins(tE, eventRow(tid(4, 5), C3, "Time trials", "is_all_day", "t"))},
			{upd(tC, calendarRow(C3, "Swim", "sync_in_progress", "t", "updated_at", "2026-11-26 01:00:01+00"),
				calendarRow(C3, "Swim", "last_sync_at", "2026-11-26 01:00:05+00", "last_sync_status", "success", "updated_at", "2026-11-26 01:00:05+00"))},
			{ins(tE, eventRow(tid(4, 6), C3, "Added by hand"))},
			{upd(tE, eventRow(E4, C3, "Relay practice"), eventRow(E4, C3, "Relay practice", "assigned_to_user_id", U1, "version", "2"))},
		}, want: []string{
			"join U1 C3", "C3 member:added",
			"C3 event:created", "C3 event:created", "C3 event:created",
			"C3 calendar:synced",
			"C3 event:created", "C3 event:assigned",
		}},
		// A later sync of Soccer: updates (a cancellation unassigns, as
		// syncCalendar does), an assignment and a deletion inside the window
		// are marked; a move marks each side by its own calendar's window
		// (Piano has none open); the same transaction after the outcome is not.
		{name: "calendar_resync_flags", txs: [][]wal.Change{
			{upd(tE, e1, with(e1, "assigned_to_user_id", U1))},
			{upd(tC, c1, with(c1, "sync_in_progress", "t"))},
			{upd(tE, with(e1, "assigned_to_user_id", U1), with(e1, "is_cancelled", "t", "start_time", "2026-11-28 10:00:00+00", "last_modified", "2026-11-26 02:00:00+00"))},
			{upd(tE, e2, with(e2, "event_calendar_id", C1))},
			{upd(tE, with(e2, "event_calendar_id", C1), with(e2, "event_calendar_id", C1, "assigned_to_user_id", U2))},
			{del(tE, with(e2, "event_calendar_id", C1, "assigned_to_user_id", U2)),
				upd(tC, with(c1, "sync_in_progress", "t"), with(c1, "last_sync_at", "2026-11-26 02:00:05+00", "last_sync_status", "success")),
				ins(tE, eventRow(E3, C1, "After the sync"))},
		}, want: []string{
			"C1 event:assigned",
			"C1 event:unassigned", "C1 event:updated",
			"C2 event:deleted", "C1 event:created",
			"C1 event:assigned",
			"C1 event:deleted", "C1 calendar:synced", "C1 event:created",
		}},
		{name: "calendar_sync_failed", txs: [][]wal.Change{
			{upd(tC, c2, with(c2, "sync_in_progress", "t"))},
			{upd(tC, with(c2, "sync_in_progress", "t"), with(c2, "sync_in_progress", "f", "last_sync_at", "2026-11-26 01:30:00+00", "last_sync_status", "error", "last_sync_error", "HTTP 404 fetching ICS"))},
		}, want: []string{"C2 calendar:sync_failed"}},
		{name: "calendar_sync_abandoned", txs: [][]wal.Change{
			{upd(tC, c1, with(c1, "sync_in_progress", "t"))},
			{ins(tE, eventRow(E3, C1, "Lost count"))},
			{upd(tC, with(c1, "sync_in_progress", "t"), c1)},
			{upd(tC, c1, with(c1, "last_sync_at", "2026-11-26 01:30:00+00", "last_sync_status", "success"))},
		}, want: []string{"C1 event:created", "C1 calendar:synced"}},
		{name: "calendar_delete_cascade", txs: [][]wal.Change{{
			del(tC, c1),
			del(tE, e1),
			del(tS, suppRow(S1, E1, "return")),
			del(tS, suppRow(S2, E2, "departure")),
			del(tM, memberRowOf(M1, C1, U1, "alice@example.com", "accepted")),
			del(tM, memberRowOf(M2, C1, U2, "bob@example.com", "accepted")),
		}}, want: []string{"C1 calendar:deleted", "close C1", "leave U1 C1", "leave U2 C1"},
			check: func(t *testing.T, d *Deriver) {
				if d.State().IsAcceptedMember(U1, C1) || d.State().IsAcceptedMember(U2, C1) {
					t.Error("memberships of a deleted calendar still accepted")
				}
				if _, ok := d.st.calendars[mustUID(C1)]; ok {
					t.Error("deleted calendar still in state")
				}
			}},
		{name: "calendar_created_with_owner", txs: [][]wal.Change{{
			ins(tC, calendarRow(C3, "Swim", "owner_id", U3)),
			ins(tM, memberRowOf(M4, C3, U3, "carol@example.com", "accepted", "invited_by_user_id", U3)),
			ins(tM, memberRowOf(tid(3, 5), C3, null, "alice@example.com", "pending", "invited_by_user_id", U3)),
		}}, want: []string{"join U3 C3", "C3 member:added", "U1 invitation:received"}},

		// ---- 4.4 supplemental events ----
		{name: "conflict_two_calendars", txs: [][]wal.Change{{del(tS, suppRow(S1, E1, "return")), del(tS, suppRow(S2, E2, "departure"))}},
			want: []string{"C1 conflict:resolved", "C2 conflict:resolved"}},
		// Same calendar: one envelope; A's two return rows are one pair.
		{name: "conflict_same_calendar", txs: [][]wal.Change{
			{ins(tE, eventRow(E3, C1, "Later"))},
			{
				del(tS, suppRow(S2, E3, "departure")),
				del(tS, suppRow(S1, E1, "return")),
				del(tS, suppRow(S3, E1, "return")),
			},
		}, want: []string{"C1 event:created", "C1 conflict:resolved"}},
		// An event changed in any other way in the transaction is no half
		// of a pair: a trip of another type deleted (E1), its row changed
		// (E2 updated, E3 inserted), its own trip inserted (E4).
		{name: "conflict_otherwise_changed_is_none", txs: [][]wal.Change{
			{ins(tE, eventRow(E4, C2, "Later"))},
			{del(tS, suppRow(S1, E1, "return")), del(tS, suppRow(S3, E1, "early_arrival")), del(tS, suppRow(S2, E2, "departure"))},
			{del(tS, suppRow(S1, E1, "return")), del(tS, suppRow(S2, E2, "departure")), upd(tE, e2, with(e2, "title", "Moved"))},
			{ins(tE, eventRow(E3, C1, "New")), del(tS, suppRow(S1, E3, "return")), del(tS, suppRow(S2, E2, "departure"))},
			{del(tS, suppRow(S1, E1, "return")), del(tS, suppRow(S2, E4, "departure")), ins(tS, suppRow(tid(5, 9), E4, "departure"))},
		}, want: []string{"C2 event:created", "C2 event:updated", "C1 event:created"}},
		// Koordi's removeMember (invitationService.ts), in one transaction:
		// every trip of the events reassigned from the member deleted (here
		// earlier resolutions had left E1 only its return and E3 only its
		// departure), the events reassigned to the owner, the membership
		// deleted. No conflict was resolved.
		{name: "conflict_remove_member_pairs_nothing", txs: [][]wal.Change{
			{ins(tE, eventRow(E3, C1, "Later", "assigned_to_user_id", U2)), upd(tE, e1, with(e1, "assigned_to_user_id", U2))},
			{
				del(tS, trip(S1, E1, "return", field3, home)),
				del(tS, trip(S2, E3, "departure", field3, home)),
				upd(tE, with(e1, "assigned_to_user_id", U2), with(e1, "assigned_to_user_id", U1)),
				upd(tE, eventRow(E3, C1, "Later", "assigned_to_user_id", U2), eventRow(E3, C1, "Later", "assigned_to_user_id", U1)),
				del(tM, memberRowOf(M2, C1, U2, "bob@example.com", "accepted")),
			},
		}, want: []string{"C1 event:created", "C1 event:assigned", "C1 event:assigned", "C1 event:assigned", "C1 event:assigned", "leave U2 C1", "C1 member:removed", "U2 member:removed"}},
		{name: "conflict_same_event_is_none", txs: [][]wal.Change{{del(tS, suppRow(S1, E1, "return")), del(tS, suppRow(S2, E1, "departure"))}},
			want: nil},
		{name: "conflict_parent_deleted_is_none", txs: [][]wal.Change{{del(tE, e1), del(tS, suppRow(S1, E1, "return")), del(tS, suppRow(S2, E2, "departure"))}},
			want: []string{"C1 event:deleted"}},

		// Koordi's resolve-conflict: two autocommitted deleteMany statements,
		// event1's returns, then event2's departures (event.ts). Trips as
		// createSupplementalEvents writes them: E1's return leaves Field 3,
		// E2's departure goes to Field 3. The pair comes with the second.
		{name: "conflict_across_transactions", txs: [][]wal.Change{
			{del(tS, trip(S1, E1, "return", field3, home))},
			{del(tS, trip(S2, E2, "departure", field3, home))},
		}, want: []string{"C1 conflict:resolved", "C2 conflict:resolved"}},
		// Same calendar: one envelope. The addresses differ in spelling
		// (case, spaces) or not at all while the coordinates match: both pair.
		{name: "conflict_across_transactions_same_place", txs: [][]wal.Change{
			{ins(tE, eventRow(E3, C1, "Second game"))},
			{del(tS, trip(S1, E1, "return", field3, home))},
			{del(tS, trip(S2, E3, "departure", loc{"  field 3,  RIVERSIDE Park, Springfield ", "39.8", "-89.6"}, home))},
			{del(tS, trip(S3, E3, "return", loc{"Riverside Park (Field 3)", field3.lat, field3.lng}, home))},
			{del(tS, trip(tid(5, 4), E1, "departure", field3, home))},
		}, want: []string{"C1 event:created", "C1 conflict:resolved", "C1 conflict:resolved"}},
		// Anything in between that does not touch event1 leaves the pair alone.
		{name: "conflict_across_unrelated_between", txs: [][]wal.Change{
			{del(tS, trip(S1, E1, "return", field3, home))},
			{upd(tE, e2, with(e2, "title", "Lesson (moved)")), msg(`{"room": "user:` + U1 + `", "event": "note", "data": 1}`)},
			{upd(tC, c2, with(c2, "updated_at", "2026-11-26 03:00:00+00"))},
			{del(tS, trip(S2, E2, "departure", field3, home))},
		}, want: []string{"C2 event:updated", "U1 note", "C1 conflict:resolved", "C2 conflict:resolved"}},
		// Departures to another place do not pair, and spend the record: the
		// next departures-only transaction finds nothing to pair with. A
		// second return record pairs with its own departure.
		{name: "conflict_across_other_place", txs: [][]wal.Change{
			{del(tS, trip(S1, E1, "return", field3, home))},
			{del(tS, trip(S2, E2, "departure", gym, home))},
			{del(tS, trip(S3, E2, "departure", field3, home))},
			{del(tS, trip(tid(5, 4), E2, "return", gym, home))},
			{del(tS, trip(tid(5, 5), E1, "departure", gym, home))},
		}, want: []string{"C2 conflict:resolved", "C1 conflict:resolved"}},
		// A half deletes the trips of one event: returns of two events in one
		// transaction record nothing.
		{name: "conflict_across_two_events_is_no_half", txs: [][]wal.Change{
			{del(tS, trip(S1, E1, "return", field3, home)), del(tS, trip(S3, E3, "return", field3, home))},
			{del(tS, trip(S2, E2, "departure", field3, home))},
			{del(tS, trip(tid(5, 4), E1, "return", field3, home))},
			{del(tS, trip(tid(5, 5), E2, "departure", field3, home))},
		}, want: []string{"C1 conflict:resolved", "C2 conflict:resolved"}},
		// Commit times: 11 s apart is too late; 10 s is not.
		{name: "conflict_across_time_limit", at: []int{0, 11, 20, 30}, txs: [][]wal.Change{
			{del(tS, trip(S1, E1, "return", field3, home))},
			{del(tS, trip(S2, E2, "departure", field3, home))},
			{del(tS, trip(S3, E2, "return", field3, home))},
			{del(tS, trip(tid(5, 4), E1, "departure", field3, home))},
		}, want: []string{"C2 conflict:resolved", "C1 conflict:resolved"}},
		// Koordi's assignEvent (eventService.ts) regenerating trips through
		// handleEventReassignment: the event row updated (sync_in_progress
		// true), deleteSupplementalEvents' one deleteMany of every type,
		// createSupplementalEvents' inserts one by one, the event row updated
		// again. E1 has all three trips; E2 lost its departure and E3 its
		// return to earlier resolutions, so their clean-ups delete returns
		// only and departures only — they pair with nothing, because E2's
		// regenerated trips (or its row's update) end the record. E2 is then
		// unassigned (deletes only, no inserts). Then a real resolution pairs.
		{name: "conflict_regenerated_trips_pair_nothing", txs: [][]wal.Change{
			{upd(tE, e1, with(e1, "assigned_to_user_id", U2, "sync_in_progress", "t", "version", "2"))},
			{del(tS, trip(S1, E1, "departure", field3, home)), del(tS, trip(S2, E1, "early_arrival", field3, home)), del(tS, trip(S3, E1, "return", field3, home))},
			{ins(tS, trip(tid(5, 11), E1, "departure", field3, home))},
			{ins(tS, trip(tid(5, 12), E1, "early_arrival", field3, home))},
			{ins(tS, trip(tid(5, 13), E1, "return", field3, home))},
			{upd(tE, with(e1, "assigned_to_user_id", U2, "sync_in_progress", "t", "version", "2"), with(e1, "assigned_to_user_id", U2, "version", "2"))},

			{upd(tE, e2, with(e2, "assigned_to_user_id", U2, "sync_in_progress", "t", "version", "2"))},
			{del(tS, trip(tid(5, 21), E2, "return", field3, home))},
			{ins(tS, trip(tid(5, 22), E2, "departure", field3, home))},
			{ins(tS, trip(tid(5, 23), E2, "return", field3, home))},
			{upd(tE, with(e2, "assigned_to_user_id", U2, "sync_in_progress", "t", "version", "2"), with(e2, "assigned_to_user_id", U2, "version", "2"))},
			{del(tS, trip(tid(5, 31), E3, "departure", field3, home))},

			{upd(tE, with(e2, "assigned_to_user_id", U2, "version", "2"), with(e2, "sync_in_progress", "t", "version", "3"))},
			{del(tS, trip(tid(5, 22), E2, "return", field3, home))},
			{upd(tE, with(e2, "sync_in_progress", "t", "version", "3"), with(e2, "version", "3"))},
			{del(tS, trip(tid(5, 32), E3, "departure", field3, home))},

			{del(tS, trip(tid(5, 13), E1, "return", field3, home))},
			{del(tS, trip(tid(5, 41), E2, "departure", field3, home))},
		}, want: []string{"C1 event:assigned", "C2 event:assigned", "C2 event:unassigned", "C1 conflict:resolved", "C2 conflict:resolved"}},
		// An event deleted with its trips (its FK cascade, in one
		// transaction) is no half; deleting event1 after its returns went
		// ends the record, as do its own later trip changes.
		{name: "conflict_event_deleted_pairs_nothing", txs: [][]wal.Change{
			{del(tE, e1), del(tS, trip(S1, E1, "departure", field3, home)), del(tS, trip(S2, E1, "return", field3, home))},
			{del(tS, trip(S3, E2, "departure", field3, home))},
			{del(tS, trip(tid(5, 4), E2, "return", field3, home))},
			{del(tE, e2), del(tS, trip(tid(5, 5), E2, "departure", field3, home))},
			{del(tS, trip(tid(5, 6), E3, "departure", field3, home))},
			{ins(tE, eventRow(E3, C1, "Replay")), ins(tE, eventRow(E4, C2, "Replay"))},
			{del(tS, trip(tid(5, 7), E3, "return", field3, home))},
			{del(tS, trip(tid(5, 8), E3, "early_arrival", field3, home))},
			{del(tS, trip(tid(5, 9), E4, "departure", field3, home))},
			{del(tS, trip(tid(5, 10), E3, "return", field3, home))},
			{del(tS, trip(tid(5, 11), E4, "departure", field3, home))},
		}, want: []string{"C1 event:deleted", "C2 event:deleted", "C1 event:created", "C2 event:created", "C1 conflict:resolved", "C2 conflict:resolved"}},
		// An event deleted when only its return was left (its FK cascade in
		// the same transaction) is no half either.
		{name: "conflict_event_deleted_with_its_return", txs: [][]wal.Change{
			{ins(tE, eventRow(E3, C1, "Later"))},
			{del(tE, e2), del(tS, trip(S1, E2, "return", field3, home))},
			{del(tS, trip(S2, E1, "departure", field3, home))},
			{del(tS, trip(S3, E1, "return", field3, home))},
			{del(tS, trip(tid(5, 4), E3, "departure", field3, home))},
		}, want: []string{"C1 event:created", "C2 event:deleted", "C1 conflict:resolved"}},
		// early_arrival rows go only with a regeneration (deleteSupplementalEvents
		// deletes every type; the resolution leaves event2's early arrival in
		// place): a transaction deleting an event's departure and early
		// arrival, or its early arrival and return, is no half, and deleting
		// event1's early arrival ends its record.
		{name: "conflict_early_arrival_pairs_nothing", txs: [][]wal.Change{
			{del(tS, trip(S1, E1, "return", field3, home))},
			{del(tS, trip(S2, E2, "departure", field3, home)), del(tS, trip(S3, E2, "early_arrival", field3, home))},
			{del(tS, trip(tid(5, 4), E1, "early_arrival", field3, home))},
			{del(tS, trip(tid(5, 5), E2, "departure", field3, home))},
			{del(tS, trip(tid(5, 6), E2, "early_arrival", field3, home)), del(tS, trip(tid(5, 7), E2, "return", field3, home))},
			{del(tS, trip(tid(5, 8), E1, "departure", field3, home))},
			{del(tS, trip(tid(5, 9), E1, "return", field3, home))},
			{del(tS, trip(tid(5, 10), E2, "departure", field3, home))},
		}, want: []string{"C1 conflict:resolved", "C2 conflict:resolved"}},

		// ---- 4.7 emit ----
		{name: "emit", txs: [][]wal.Change{{
			msg(`{"room": "calendar:` + C1 + `", "event": "event:reminder", "data": {"event_id": "` + E1 + `", "minutes": 15}}`),
			upd(tE, e1, with(e1, "title", "Practice (late)")),
			msg(`{"room": "user:` + U1 + `", "event": "note", "data": "hello", "extra": 1}`),
			msg(`{"room": "user:` + U1 + `", "event": "list", "data": [1, 2, null]}`),
		}}, want: []string{"C1 event:reminder", "C1 event:updated", "U1 note", "U1 list"}},
		// ---- room moves in their place (issue 10) ----
		{name: "moves_accept_then_event", txs: [][]wal.Change{{
			upd(tM, memberRowOf(M4, C1, U3, "carol@example.com", "pending"), memberRowOf(M4, C1, U3, "carol@example.com", "accepted")),
			ins(tE, eventRow(E3, C1, "Swim")),
		}}, want: []string{"join U3 C1", "C1 member:added", "C1 event:created"}},
		{name: "moves_remove_then_event", txs: [][]wal.Change{{
			del(tM, memberRowOf(M2, C1, U2, "bob@example.com", "accepted")),
			ins(tE, eventRow(E3, C1, "Swim")),
		}}, want: []string{"leave U2 C1", "C1 member:removed", "U2 member:removed", "C1 event:created"}},
		{name: "moves_event_delete_close", txs: [][]wal.Change{{
			ins(tE, eventRow(E3, C1, "Swim")),
			del(tE, e1),
			del(tM, memberRowOf(M2, C1, U2, "bob@example.com", "accepted")),
			del(tC, c1),
			del(tM, memberRowOf(M1, C1, U1, "alice@example.com", "accepted")),
		}}, want: []string{"C1 event:created", "C1 calendar:deleted", "close C1", "leave U2 C1", "leave U1 C1"}},
		{name: "moves_emitted_member_added", txs: [][]wal.Change{{
			msg(`{"room": "calendar:` + C2 + `", "event": "member:added", "data": {"calendar_id": "` + C2 + `", "user_id": "` + U3 + `"}}`),
			msg(`{"room": "calendar:` + C1 + `", "event": "member:removed", "data": {"calendar_id": "` + C1 + `", "user_id": "` + U2 + `"}}`),
			ins(tE, eventRow(E3, C2, "Swim")),
		}}, want: []string{"C2 member:added", "C1 member:removed", "C2 event:created"},
			check: func(t *testing.T, d *Deriver) {
				if d.State().IsAcceptedMember(U3, C2) || !d.State().IsAcceptedMember(U2, C1) {
					t.Error("an emitted member event changed memberships")
				}
			}},

		// ---- names as of the commit, wherever the rename sits ----
		{name: "invitation_then_calendar_rename_one_tx", txs: [][]wal.Change{{
			ins(tM, memberRowOf(M4, C1, null, "Carol@Example.com", "pending")),
			upd(tC, c1, with(c1, "name", "Soccer Club")),
		}}, want: []string{"U3 invitation:received", "C1 calendar:updated"},
			check: func(t *testing.T, d *Deriver) {
				if name := d.st.calendars[mustUID(C1)].name; name != "Soccer Club" {
					t.Errorf("calendar name %q", name)
				}
			}},

		// ---- REPLICA IDENTITY DEFAULT under a running service ----
		{name: "no_old_row_event_update", txs: [][]wal.Change{{updKey(tE, with(e1, "assigned_to_user_id", U1))}},
			want: []string{"C1 sync:reset"}},
		{name: "no_old_row_event_delete", txs: [][]wal.Change{{delKey(tE, E1)}},
			want: []string{"C1 sync:reset"}},
		{name: "no_old_row_member_delete", txs: [][]wal.Change{{delKey(tM, M2)}},
			want: []string{"leave U2 C1", "C1 member:removed", "U2 member:removed"},
			check: func(t *testing.T, d *Deriver) {
				if d.State().IsAcceptedMember(U2, C1) {
					t.Error("U2 still a member of C1")
				}
			}},
		{name: "no_old_row_calendar_update", txs: [][]wal.Change{{updKey(tC, with(c1, "name", "Soccer Club"))}},
			want: []string{"C1 sync:reset"}},

		{name: "emit_rejected", txs: [][]wal.Change{{
			msg(`not json`),
			msg(`[1,2]`),
			msg(`null`),
			msg(`{"room": "room:1", "event": "x", "data": {}}`),
			msg(`{"room": 5, "event": "x", "data": {}}`),
			msg(`{"room": "user:` + U1 + `", "event": "", "data": {}}`),
			msg(`{"room": "user:` + U1 + `", "event": "connect", "data": {}}`),
			msg(`{"room": "user:` + U1 + `", "event": "a\nb", "data": {}}`),
			msg(`{"room": "user:` + U1 + `", "event": "x"}`),
			msg(`{"ROOM": "user:` + U1 + `", "event": "x", "data": 1}`),
		}}, want: nil},

		// ---- everything else ----
		{name: "unknown_table", txs: [][]wal.Change{{ins("children", row("id", tid(9, 1), "name", "Mia"))}}, want: nil},
		{name: "user_insert_update_no_event", txs: [][]wal.Change{{ins(tU, userRow(U4, "Dave", "dave@example.com")), upd(tU, userRow(U1, "Alice", "alice@example.com"), userRow(U1, "Alicia", "alice@example.com"))}},
			want: nil},
	}
}

func mustUID(s string) uid {
	u, ok := parseUID(s)
	if !ok {
		panic("bad uid " + s)
	}
	return u
}

// abbreviate turns a room into the short form of deriveCase.want.
func abbreviate(room string) string {
	_, id, err := schema.ParseRoom(room)
	if err != nil {
		return room
	}
	for name, v := range map[string]string{"U1": U1, "U2": U2, "U3": U3, "U4": U4, "C1": C1, "C2": C2, "C3": C3} {
		if v == id {
			return name
		}
	}
	return room
}

func TestDerive(t *testing.T) {
	for _, tc := range deriveCases() {
		t.Run(tc.name, func(t *testing.T) {
			d := New(Config{})
			if err := d.Bootstrap(context.Background(), baseQuerier()); err != nil {
				t.Fatal(err)
			}
			var all []schema.Transaction
			for i, changes := range tc.txs {
				lsn := uint64(0x16B0000 + 0x100*(i+1))
				sec := i
				if tc.at != nil {
					sec = tc.at[i]
				}
				tx := &wal.Tx{CommitLSN: lsn, CommitTime: time.Date(2026, 11, 26, 1, 0, sec, 0, time.UTC), Xid: uint32(700 + i), Changes: changes}
				out := d.Derive(tx)
				if out.CommitLSN != lsn || !out.CommitTime.Equal(tx.CommitTime) || out.Xid != tx.Xid {
					t.Errorf("tx %d: derived %x %v xid %d, want %x %v xid %d", i, out.CommitLSN, out.CommitTime, out.Xid, lsn, tx.CommitTime, tx.Xid)
				}
				for j, e := range out.Events {
					// Indexes increase, with gaps where the state decided
					// against an event (Deriver.holes) or a bulk change
					// collapsed a room's events; the goldens hold them.
					if e.Offset.LSN != lsn || j > 0 && e.Offset.Index <= out.Events[j-1].Offset.Index {
						t.Errorf("tx %d envelope %d: offset %v after %v", i, j, e.Offset, out.Events[max(j-1, 0)].Offset)
					}
					if !json.Valid(e.Data) {
						t.Errorf("tx %d envelope %d: invalid JSON data %q", i, j, e.Data)
					}
				}
				// The wire form carries everything derived.
				b, err := json.Marshal(out)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := schema.DecodeTransaction(b); len(out.Events) > 0 && err != nil {
					t.Errorf("tx %d: derived transaction does not decode: %v", i, err)
				}
				all = append(all, out)
			}
			got := summary(all)
			if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Errorf("derived:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(tc.want, "\n  "))
			}
			if tc.check != nil {
				tc.check(t, d)
			}
			compareGolden(t, filepath.Join("testdata", tc.name+".golden"), transactionLines(t, all))
		})
	}
}

// summary lists events as "<room> <event>" and moves as "<op> <user>
// <room>" (rooms and users abbreviated), in the order the gateway applies
// them.
func summary(txs []schema.Transaction) []string {
	var out []string
	for _, tx := range txs {
		walk(tx, func(e *schema.Envelope, m *schema.Move) {
			if m != nil {
				line := m.Op.String()
				if m.User != "" {
					line += " " + abbreviate(schema.UserRoom(m.User))
				}
				out = append(out, line+" "+abbreviate(m.Room))
				return
			}
			out = append(out, abbreviate(e.Room)+" "+e.Event)
		})
	}
	return out
}

// walk visits a transaction's events and moves in the gateway's order: the
// moves at i before event i, the moves at len(Events) last.
func walk(tx schema.Transaction, fn func(*schema.Envelope, *schema.Move)) {
	mi := 0
	for i := 0; i <= len(tx.Events); i++ {
		for mi < len(tx.Moves) && tx.Moves[mi].At <= i {
			fn(nil, &tx.Moves[mi])
			mi++
		}
		if i < len(tx.Events) {
			fn(&tx.Events[i], nil)
		}
	}
}

// TestDeriveDeterministic derives every case twice from fresh state and
// compares the bytes.
func TestDeriveDeterministic(t *testing.T) {
	run := func(tc deriveCase) []byte {
		d := New(Config{})
		if err := d.Bootstrap(context.Background(), baseQuerier()); err != nil {
			t.Fatal(err)
		}
		var all []schema.Transaction
		for i, changes := range tc.txs {
			all = append(all, d.Derive(&wal.Tx{CommitLSN: uint64(i + 1), Changes: changes}))
		}
		return transactionLines(t, all)
	}
	for _, tc := range deriveCases() {
		if a, b := run(tc), run(tc); !bytes.Equal(a, b) {
			t.Errorf("%s: two derivations differ:\n%s\n%s", tc.name, a, b)
		}
	}
}

// TestOffsetsStableAcrossState: a transaction decoded again after a restart
// meets the state of then, which may decide an invitation or a
// conflict:resolved otherwise (the invitee's user created or deleted
// meanwhile, an event's calendar no longer known). Every event derived both
// times carries the same offset, so a recovering client's position means
// the same event.
func TestOffsetsStableAcrossState(t *testing.T) {
	tx := &wal.Tx{CommitLSN: 0x16B0100, Changes: []wal.Change{
		ins(tM, memberRowOf(M4, C1, null, "Carol@Example.com", "pending", "invited_by_user_id", U1)),
		del(tS, suppRow(S1, E1, "return")),
		del(tS, suppRow(S2, E2, "departure")),
		ins(tE, eventRow(E3, C1, "After")),
	}}
	tx2 := &wal.Tx{CommitLSN: 0x16B0200, Changes: []wal.Change{
		ins(tM, memberRowOf(tid(3, 6), C2, null, "Carol@Example.com", "pending")),
		ins(tE, eventRow(E4, C2, "Last")),
	}}
	// Three invitations to one user, over a bulk bound of 2: collapsed or
	// not there, the event after them keeps its place.
	tx3 := &wal.Tx{CommitLSN: 0x16B0300, Changes: []wal.Change{
		ins(tM, memberRowOf(tid(3, 7), C1, null, "Carol@Example.com", "pending")),
		ins(tM, memberRowOf(tid(3, 8), C2, null, "Carol@Example.com", "pending")),
		ins(tM, memberRowOf(tid(3, 9), C1, null, "Carol@Example.com", "pending")),
		ins(tE, eventRow(tid(4, 9), C1, "After the bulk")),
	}}
	derive := func(q *fakeQuerier) map[string]schema.Offset {
		d := New(Config{BulkEvents: 2})
		if err := d.Bootstrap(context.Background(), q); err != nil {
			t.Fatal(err)
		}
		got := map[string]schema.Offset{}
		for _, x := range []*wal.Tx{tx, tx2, tx3} {
			for _, e := range d.Derive(x).Events {
				got[abbreviate(e.Room)+" "+e.Event+" "+string(e.Data)] = e.Offset
			}
		}
		return got
	}
	then := derive(baseQuerier())
	later := baseQuerier() // Carol deleted, E2 (and its calendar) gone
	later.tables["users"] = later.tables["users"][:2]
	later.tables["events"] = later.tables["events"][:1]
	now := derive(later)
	common := 0
	for k, off := range now {
		if o, ok := then[k]; ok {
			common++
			if o != off {
				t.Errorf("%s: offset %v, decoded first %v", k, off, o)
			}
		}
	}
	if common < 4 || len(then) <= len(now) {
		t.Fatalf("the states did not decide differently: %d events first, %d again, %d in common", len(then), len(now), common)
	}
}

// transactionLines renders events as the lines tail prints and moves as
// {"move":{…}} lines, in the gateway's order.
func transactionLines(t *testing.T, txs []schema.Transaction) []byte {
	t.Helper()
	var buf bytes.Buffer
	for _, tx := range txs {
		walk(tx, func(e *schema.Envelope, m *schema.Move) {
			var v any = e
			if m != nil {
				v = map[string]any{"move": map[string]string{"op": m.Op.String(), "user": m.User, "room": m.Room}}
			}
			b, err := json.Marshal(v)
			if err != nil {
				t.Fatal(err)
			}
			buf.Write(b)
			buf.WriteByte('\n')
		})
	}
	return buf.Bytes()
}

func compareGolden(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./cdc/derive -update)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs (go test ./cdc/derive -update to accept):\ngot:\n%s\nwant:\n%s", path, got, want)
	}
}

// BenchmarkDerive measures the hot path: one transaction assigning an event
// and changing its title (two envelopes).
func BenchmarkDerive(b *testing.B) {
	b.ReportAllocs()
	d := New(Config{})
	if err := d.Bootstrap(context.Background(), baseQuerier()); err != nil {
		b.Fatal(err)
	}
	tx := &wal.Tx{CommitLSN: 1, Changes: []wal.Change{upd(tE, e1, with(e1, "assigned_to_user_id", U1, "title", "New"))}}
	for b.Loop() {
		if len(d.Derive(tx).Events) != 2 {
			b.Fatal("want 2 envelopes")
		}
	}
}

// TestKeptStringsDoNotAliasRows: cdc's decoder makes a row's values
// substrings of one string per tuple, so what outlives the transaction —
// a move (kept in the gateway's replay window), a user's name and email —
// must be a copy, or one short id would keep the whole row alive.
func TestKeptStringsDoNotAliasRows(t *testing.T) {
	d := New(Config{})
	if err := d.Bootstrap(context.Background(), baseQuerier()); err != nil {
		t.Fatal(err)
	}
	tuple := strings.Repeat("x", 4096) + U3 + "Carol Smith" + "carol3@example.com"
	at := 4096
	user := tuple[at : at+len(U3)]
	name := tuple[at+len(U3) : at+len(U3)+len("Carol Smith")]
	email := tuple[at+len(U3)+len("Carol Smith"):]
	inside := func(s string) bool {
		p := uintptr(unsafe.Pointer(unsafe.StringData(s)))
		base := uintptr(unsafe.Pointer(unsafe.StringData(tuple)))
		return p >= base && p < base+uintptr(len(tuple))
	}
	tx := &wal.Tx{CommitLSN: 1, Changes: []wal.Change{
		upd(tableUsers, userRow(U3, "Carol", "carol@example.com"), with(userRow(U3, "Carol", "carol@example.com"), "id", user, "name", name, "email", email)),
		ins(tM, memberRowOf(M4, C2, user, email, "accepted")),
	}}
	out := d.Derive(tx)
	if len(out.Moves) == 0 {
		t.Fatal("no move derived for the accepted membership")
	}
	for _, m := range out.Moves {
		if inside(m.User) {
			t.Errorf("move %+v aliases the row's string", m)
		}
	}
	id, _ := parseUID(U3)
	u, ok := d.st.users[id]
	if !ok {
		t.Fatal("user not in the state")
	}
	if inside(u.name) || inside(u.email) {
		t.Errorf("state's user %+v aliases the row's string", u)
	}
}
