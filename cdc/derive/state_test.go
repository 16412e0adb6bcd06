package derive

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/koordi/koordi-realtime/cdc/wal"
	"github.com/koordi/koordi-realtime/schema"
)

func TestParseUID(t *testing.T) {
	for _, s := range []string{U1, "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"} {
		u, ok := parseUID(s)
		if !ok {
			t.Errorf("parseUID(%q) failed", s)
			continue
		}
		if got := u.String(); got != strings.ToLower(s) {
			t.Errorf("parseUID(%q).String() = %q", s, got)
		}
	}
	for _, s := range []string{"", "x", "a0eebc999c0b4ef8bb6d6bb9bd380a11", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1g",
		"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1", "a0eebc99x9c0b-4ef8-bb6d-6bb9bd380a11"} {
		if _, ok := parseUID(s); ok {
			t.Errorf("parseUID(%q) accepted", s)
		}
	}
}

func TestRFC3339(t *testing.T) {
	for in, want := range map[string]string{
		"2026-11-26 01:11:16.123456+00": "2026-11-26T01:11:16.123456Z",
		"2026-11-26 01:11:16.123+00":    "2026-11-26T01:11:16.123Z",
		"2026-11-26 01:11:16+00":        "2026-11-26T01:11:16.000Z",
		"2026-11-26 03:11:16+02":        "2026-11-26T01:11:16.000Z",
		"2026-11-26 06:41:16+05:30":     "2026-11-26T01:11:16.000Z",
		"1900-01-01 00:09:21+00:09:21":  "1900-01-01T00:00:00.000Z",
		"2026-11-26T01:11:16Z":          "2026-11-26T01:11:16.000Z",
		"2026-11-26 01:11:16":           "2026-11-26T01:11:16.000Z",
		"infinity":                      "infinity",
		"":                              "",
	} {
		if got := rfc3339(in); got != want {
			t.Errorf("rfc3339(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestBootstrapErrorKeepsState(t *testing.T) {
	d := New(Config{})
	if err := d.Bootstrap(context.Background(), baseQuerier()); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	if err := d.Bootstrap(context.Background(), &fakeQuerier{err: boom}); !errors.Is(err, boom) {
		t.Fatalf("Bootstrap error = %v, want %v", err, boom)
	}
	if !d.State().IsAcceptedMember(U1, C1) {
		t.Error("failed bootstrap dropped the previous state")
	}
}

func TestBootstrapReplaces(t *testing.T) {
	d := New(Config{})
	d.Derive(&wal.Tx{CommitLSN: 1, Changes: []wal.Change{ins(tM, memberRowOf(M4, C3, U4, "dave@example.com", "accepted"))}})
	if !d.State().IsAcceptedMember(U4, C3) {
		t.Fatal("streamed membership not accepted")
	}
	if err := d.Bootstrap(context.Background(), baseQuerier()); err != nil {
		t.Fatal(err)
	}
	if d.State().IsAcceptedMember(U4, C3) {
		t.Error("bootstrap kept a membership the database does not have")
	}
	if got := d.State().AcceptedCalendars(U2); strings.Join(got, ",") != C1+","+C2 {
		t.Errorf("AcceptedCalendars(U2) = %v", got)
	}
	if got := d.State().AcceptedCalendars("not-a-uuid"); got != nil {
		t.Errorf("AcceptedCalendars(bad id) = %v", got)
	}
	if d.State().IsAcceptedMember("x", C1) || d.State().IsAcceptedMember(U1, "y") {
		t.Error("bad ids reported as members")
	}
}

// TestStateConcurrentReads runs readers against Derive under -race.
func TestStateConcurrentReads(t *testing.T) {
	d := New(Config{})
	if err := d.Bootstrap(context.Background(), baseQuerier()); err != nil {
		t.Fatal(err)
	}
	st := d.State()
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				st.IsAcceptedMember(U3, C1)
				st.AcceptedCalendars(U3)
			}
		})
	}
	added := memberRowOf(M4, C1, U3, "carol@example.com", "accepted")
	for i := range 500 {
		d.Derive(&wal.Tx{CommitLSN: uint64(2 * i), Changes: []wal.Change{ins(tM, added)}})
		d.Derive(&wal.Tx{CommitLSN: uint64(2*i + 1), Changes: []wal.Change{del(tM, added)}})
	}
	close(stop)
	wg.Wait()
	if st.IsAcceptedMember(U3, C1) {
		t.Error("membership left accepted after its delete")
	}
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	d := New(Config{Registerer: reg})
	New(Config{Registerer: reg}) // a second Deriver shares the collectors
	if err := d.Bootstrap(context.Background(), baseQuerier()); err != nil {
		t.Fatal(err)
	}
	d.Derive(&wal.Tx{CommitLSN: 1, Changes: []wal.Change{
		del(tM, memberRowOf(M2, C1, U2, "bob@example.com", "accepted")),
		msg(`{"room":"nope","event":"x","data":1}`),
		msg(`{"room":"user:` + U1 + `","event":"anything","data":1}`),
		msg(`{"room":"user:` + U1 + `","event":"member:added","data":1}`),
		msg(`{`),
		ins("children", row("id", tid(9, 1))),
	}})
	for label, want := range map[string]float64{schema.MemberRemoved: 2, schema.MemberAdded: 1, emitLabel: 1} {
		if got := testutil.ToFloat64(d.m.derived.WithLabelValues(label)); got != want {
			t.Errorf("koordi_events_derived_total{event=%q} = %v, want %v", label, got, want)
		}
	}
	n, err := testutil.GatherAndCount(reg, "koordi_events_derived_total")
	if err != nil {
		t.Fatal(err)
	}
	if n != len(schema.Names)+1 {
		t.Errorf("koordi_events_derived_total has %d series, want one per schema.Names and %q (%d)", n, emitLabel, len(schema.Names)+1)
	}
	want := `
# HELP koordi_emit_rejected_total koordi_realtime.emit messages rejected, by reason.
# TYPE koordi_emit_rejected_total counter
koordi_emit_rejected_total{reason="bad_data"} 0
koordi_emit_rejected_total{reason="bad_event"} 0
koordi_emit_rejected_total{reason="bad_room"} 1
koordi_emit_rejected_total{reason="malformed"} 1
koordi_emit_rejected_total{reason="too_large"} 0
# HELP koordi_derive_skipped_total Changes or events derivation skipped, by reason (unknown_table, invalid_id, no_old_row).
# TYPE koordi_derive_skipped_total counter
koordi_derive_skipped_total{reason="invalid_id"} 0
koordi_derive_skipped_total{reason="no_old_row"} 0
koordi_derive_skipped_total{reason="unknown_table"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "koordi_emit_rejected_total", "koordi_derive_skipped_total"); err != nil {
		t.Error(err)
	}
}

func TestEmitTooLarge(t *testing.T) {
	big := `{"room":"user:` + U1 + `","event":"x","data":"` + strings.Repeat("a", maxEmitBytes) + `"}`
	if _, _, _, reason := parseEmit([]byte(big)); reason != rejectTooLarge {
		t.Errorf("reason = %q, want %q", reason, rejectTooLarge)
	}
}

// TestOffsetsPast16Bits: a transaction deriving more events than a 16-bit
// index could number (the offset form before 8 index digits) keeps every
// event, with consecutive offsets.
func TestOffsetsPast16Bits(t *testing.T) {
	d := New(Config{BulkEvents: -1})
	const n = 1<<16 + 10
	changes := make([]wal.Change, 0, n)
	for i := range n {
		changes = append(changes, ins(tE, eventRow(fmt.Sprintf("00000004-0000-4000-8000-%012d", i), C1, "x")))
	}
	envs := d.Derive(&wal.Tx{CommitLSN: 7, Changes: changes}).Events
	if len(envs) != n {
		t.Fatalf("%d envelopes, want %d", len(envs), n)
	}
	for i, e := range envs {
		if e.Offset != (schema.Offset{LSN: 7, Index: uint32(i)}) {
			t.Fatalf("envelope %d: offset %v", i, e.Offset)
		}
	}
}

// TestBulkChange: a room that would get more than BulkEvents events from one
// transaction gets one sync:reset {reason: "bulk_change"} at the place of the
// first, other rooms their events, and the moves stay in place among what is
// kept; a deleted calendar's cascade is no bulk change.
func TestBulkChange(t *testing.T) {
	d := New(Config{BulkEvents: 3})
	if err := d.Bootstrap(context.Background(), baseQuerier()); err != nil {
		t.Fatal(err)
	}
	var changes []wal.Change
	changes = append(changes, ins(tE, eventRow(tid(4, 100), C2, "kept 1")))
	for i := range 5 {
		changes = append(changes, ins(tE, eventRow(tid(4, 200+i), C1, "bulk")))
	}
	changes = append(changes, ins(tM, memberRowOf(M4, C2, U4, "dave@example.com", "accepted")))
	changes = append(changes, ins(tE, eventRow(tid(4, 101), C2, "kept 2")))
	tx := d.Derive(&wal.Tx{CommitLSN: 9, Changes: changes})
	got := summary([]schema.Transaction{tx})
	want := []string{"C2 event:created", "C1 sync:reset", "join U4 C2", "C2 member:added", "C2 event:created"}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("derived %v, want %v", got, want)
	}
	if string(tx.Events[1].Data) != `{"reason":"bulk_change"}` {
		t.Fatalf("reset payload %s", tx.Events[1].Data)
	}
	// Numbered as derived: the reset has its room's first event's place,
	// and the other rooms' events keep theirs (the five of C1 were 1-5).
	for i, want := range []uint32{0, 1, 6, 7} {
		if e := tx.Events[i]; e.Offset != (schema.Offset{LSN: 9, Index: want}) {
			t.Fatalf("event %d: offset %v, want index %d", i, e.Offset, want)
		}
	}
	var cascade []wal.Change
	cascade = append(cascade, del(tC, c1))
	for i := range 10 {
		cascade = append(cascade, del(tE, eventRow(tid(4, 300+i), C1, "gone")))
	}
	if got := summary([]schema.Transaction{d.Derive(&wal.Tx{CommitLSN: 10, Changes: cascade})}); strings.Join(got, ",") != "C1 calendar:deleted,close C1" {
		t.Fatalf("cascade: %v", got)
	}
}

// TestSpilledTransaction: a transaction spilled to disk derives the same
// bytes as in memory.
func TestSpilledTransaction(t *testing.T) {
	build := func(spillAt int) *wal.Tx {
		tx := &wal.Tx{CommitLSN: 11}
		for _, c := range []wal.Change{
			ins(tE, eventRow(E3, C1, "Swim")),
			upd(tE, e1, with(e1, "assigned_to_user_id", U1, "title", "New")),
			upd(tC, c1, with(c1, "name", "Renamed")),
			del(tM, memberRowOf(M2, C1, U2, "bob@example.com", "accepted")),
			updKey(tE, with(e2, "title", "no old row")),
		} {
			if err := tx.Add(c, spillAt, t.TempDir()); err != nil {
				t.Fatal(err)
			}
		}
		return tx
	}
	derive := func(tx *wal.Tx) []byte {
		d := New(Config{})
		if err := d.Bootstrap(context.Background(), baseQuerier()); err != nil {
			t.Fatal(err)
		}
		return transactionLines(t, []schema.Transaction{d.Derive(tx)})
	}
	mem, spilled := build(0), build(1)
	defer spilled.Release()
	if mem.Spilled() || !spilled.Spilled() || spilled.Len() != 5 {
		t.Fatalf("spilled=%v/%v len %d", mem.Spilled(), spilled.Spilled(), spilled.Len())
	}
	a, b := derive(mem), derive(spilled)
	if !bytes.Equal(a, b) || spilled.Err() != nil {
		t.Fatalf("spilled transaction derives differently (%v):\n%s\n%s", spilled.Err(), a, b)
	}
}

// BenchmarkStateMemory measures the state's heap per user, membership and
// event for 100k users (one accepted membership and ten events each), loaded
// through Bootstrap before the timed loop; the figures are quoted in doc.go.
// The loop itself times IsAcceptedMember against that state.
func BenchmarkStateMemory(b *testing.B) {
	b.ReportAllocs()
	const users = 100_000
	const eventsPerUser = 10
	var d *Deriver
	measure := func(q *genQuerier) float64 {
		d = nil
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		d = New(Config{})
		if err := d.Bootstrap(context.Background(), q); err != nil {
			b.Fatal(err)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		return float64(after.HeapAlloc) - float64(before.HeapAlloc)
	}
	onlyUsers := measure(&genQuerier{users: users})
	withMembers := measure(&genQuerier{users: users, members: true})
	withEvents := measure(&genQuerier{users: users, members: true, events: eventsPerUser})
	st := d.State()
	userID := fmt.Sprintf("%08d-0000-4000-8000-%012d", 1, 4242)
	calID := fmt.Sprintf("%08d-0000-4000-8000-%012d", 2, 4242/20)
	for b.Loop() {
		if !st.IsAcceptedMember(userID, calID) {
			b.Fatal("member not found")
		}
	}
	b.ReportMetric(onlyUsers/users, "B/user")
	b.ReportMetric((withMembers-onlyUsers)/users, "B/membership")
	b.ReportMetric((withEvents-withMembers)/(users*eventsPerUser), "B/event")
}

// genQuerier generates bootstrap rows on the fly, so the measured heap holds
// only the state: user i is "User <i>" <user<i>@example.com>, accepted in
// calendar i/20 (5000 calendars).
type genQuerier struct {
	users   int
	members bool
	events  int
}

func (g *genQuerier) Query(_ context.Context, sql string, _ ...any) (pgx.Rows, error) {
	table := sql[strings.LastIndex(sql, " FROM ")+6:]
	r := &genRows{table: table, g: g}
	switch table {
	case "users":
		r.n = g.users
	case "event_calendars":
		r.n = g.users / 20
	case "event_calendar_memberships":
		if g.members {
			r.n = g.users
		}
	case "events":
		r.n = g.users * g.events
	}
	return r, nil
}

type genRows struct {
	fakeRows
	g     *genQuerier
	table string
	n, i  int
	buf   [4][]byte
}

func (r *genRows) Next() bool {
	if r.i >= r.n {
		return false
	}
	i := r.i
	r.i++
	id := func(k, n int) []byte { return fmt.Appendf(nil, "%08d-0000-4000-8000-%012d", k, n) }
	switch r.table {
	case "users":
		r.cur = [][]byte{id(1, i), fmt.Appendf(nil, "User %d", i), fmt.Appendf(nil, "user%d@example.com", i)}
	case "event_calendars":
		r.cur = [][]byte{id(2, i), fmt.Appendf(nil, "Calendar %d", i), []byte("false")}
	case "event_calendar_memberships":
		r.cur = [][]byte{id(3, i), id(2, i/20), id(1, i), []byte("accepted")}
	case "events":
		r.cur = [][]byte{id(4, i), id(2, i/(20*r.g.events))}
	}
	return true
}
