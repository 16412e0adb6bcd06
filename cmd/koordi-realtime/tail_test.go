package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/koordi/koordi-realtime/schema"
	ksql "github.com/koordi/koordi-realtime/sql"
	"github.com/koordi/koordi-realtime/sql/pgcluster"
)

// line is one printed event.
type line struct {
	Offset string          `json:"offset"`
	Room   string          `json:"room"`
	Event  string          `json:"event"`
	Data   json.RawMessage `json:"data"`
}

func parseLines(t *testing.T, out string) []line {
	t.Helper()
	var lines []line
	for _, s := range strings.Split(strings.TrimSpace(out), "\n") {
		if s == "" {
			continue
		}
		var l line
		if err := json.Unmarshal([]byte(s), &l); err != nil {
			t.Fatalf("not a JSON line: %q: %v", s, err)
		}
		lines = append(lines, l)
	}
	return lines
}

const (
	tailUser  = "11111111-1111-4111-8111-111111111111"
	tailChild = "33333333-3333-4333-8333-333333333333"
	tailCal   = "44444444-4444-4444-8444-444444444444"
)

// seedCalendar writes one calendar and its owner, after tail started: its
// rows are streamed, not bootstrapped.
func seedCalendar(db *testDB) {
	db.t.Helper()
	db.exec(`INSERT INTO users (id, email, name) VALUES ($1, 'ada@example.com', 'Ada')`, tailUser)
	db.exec(`INSERT INTO children (id, name) VALUES ($1, 'Kid')`, tailChild)
	db.exec(`INSERT INTO event_calendars (id, name, ics_url, child_id, owner_id) VALUES ($1, 'Soccer', 'https://example.com/a.ics', $2, $3)`,
		tailCal, tailChild, tailUser)
}

// TestTailPrintsEvents runs tail in-process: it prints each derived event as
// one JSON line and exits 0 when its context ends (SIGINT/SIGTERM in main).
func TestTailPrintsEvents(t *testing.T) {
	db := newTestDB(t)
	db.setup()
	p := startInProcess(t, map[string]string{"DATABASE_URL": db.url, "TAIL_SLOT_NAME": db.slot("tail")}, "tail")
	waitLogged(t, &p.stderr, "streaming started")

	seedCalendar(db)
	db.exec(`INSERT INTO events (event_calendar_id, ics_uid, title, start_time, end_time) VALUES ($1, 'u1', 'Practice', now(), now())`, tailCal)
	waitUntil(t, "event:created", func() bool { return strings.Contains(p.stdout.String(), `"event:created"`) })
	if c := p.stop(); c != 0 {
		t.Fatalf("exit %d, stderr:\n%s", c, p.stderr.String())
	}
	lines := parseLines(t, p.stdout.String())
	got := lines[len(lines)-1]
	if got.Room != schema.CalendarRoom(tailCal) || got.Event != schema.EventCreated {
		t.Fatalf("last line %+v, want event:created to calendar:%s", got, tailCal)
	}
	if _, err := schema.ParseOffset(got.Offset); err != nil {
		t.Fatal(err)
	}
	var payload map[string]any
	if err := json.Unmarshal(got.Data, &payload); err != nil || payload["event_title"] != "Practice" {
		t.Fatalf("data %s: %v", got.Data, err)
	}
}

// startTail runs tail as a subprocess on db, with its own slot, and waits
// until it streams: a process to SIGKILL and SIGTERM.
func startTail(t *testing.T, db *testDB, name string) *proc {
	t.Helper()
	p := startProc(t, name, "", append(os.Environ(),
		"DATABASE_URL="+db.url,
		"TAIL_SLOT_NAME="+db.slot("tail"),
		"TAIL_STATUS_INTERVAL=100ms",
		"LOG_LEVEL=info",
	), "tail")
	waitStreaming(t, &p.stderr) // a second run resumes the slot
	return p
}

// TestTailCrashRedelivers kills tail (SIGKILL, no goodbye) in the middle of
// thousands of single-row commits and starts it again: every commit's event
// is printed at least once across both runs, events printed by both carry
// identical offsets, and offsets increase within each run. The second run
// ends on SIGTERM with exit status 0.
func TestTailCrashRedelivers(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and writes thousands of commits")
	}
	db := newTestDB(t)
	db.setup()
	seedCalendar(db)
	var eventID string
	if err := db.conn.QueryRow(context.Background(),
		`INSERT INTO events (event_calendar_id, ics_uid, title, start_time, end_time) VALUES ($1, 'u1', 'initial', now(), now()) RETURNING id`,
		tailCal).Scan(&eventID); err != nil {
		t.Fatal(err)
	}
	first := startTail(t, db, "tail run 1")

	const total = 3000
	progress := make(chan int, total)
	writerErr := make(chan error, 1)
	go func() {
		defer close(progress)
		w, err := pgx.Connect(context.Background(), db.url)
		if err != nil {
			writerErr <- err
			return
		}
		defer w.Close(context.Background())
		for i := 0; i < total; i++ {
			if _, err := w.Exec(context.Background(), `UPDATE events SET title = $1 WHERE id = $2`, fmt.Sprintf("t-%04d", i), eventID); err != nil {
				writerErr <- err
				return
			}
			progress <- i
		}
		writerErr <- nil
	}()

	waitUntil(t, "a third of the events printed", func() bool {
		return strings.Count(first.stdout.String(), `"event:updated"`) >= total/3
	})
	first.kill()

	second := startTail(t, db, "tail run 2")
	for range progress {
	}
	if err := <-writerErr; err != nil {
		t.Fatal(err)
	}
	last := fmt.Sprintf(`"event_title":"t-%04d"`, total-1)
	waitUntil(t, "the last commit printed", func() bool { return strings.Contains(second.stdout.String(), last) })
	if err, _ := second.signal(syscall.SIGTERM, waitLimit); err != nil {
		t.Fatalf("tail after SIGTERM: %v; stderr:\n%s", err, second.stderr.String())
	}
	// On SIGTERM tail confirms what it printed before it exits.
	lastLines := tailLines(t, second.stdout.String(), false)
	lastOff, err := schema.ParseOffset(lastLines[len(lastLines)-1].Offset)
	if err != nil {
		t.Fatal(err)
	}
	if confirmed := db.confirmedLSN(db.slot("tail")); confirmed <= lastOff.LSN {
		t.Fatalf("after SIGTERM the slot confirms %X, not past the last printed commit %X", confirmed, lastOff.LSN)
	}

	runs := [][]line{tailLines(t, first.stdout.String(), true), tailLines(t, second.stdout.String(), false)}
	offsets := map[string]string{} // title → offset
	redelivered := 0
	for i, lines := range runs {
		var prev schema.Offset
		for _, l := range lines {
			off, err := schema.ParseOffset(l.Offset)
			if err != nil {
				t.Fatal(err)
			}
			if off.Compare(prev) <= 0 {
				t.Fatalf("run %d: offset %s after %s", i+1, off, prev)
			}
			prev = off
			if l.Event != schema.EventUpdated {
				continue
			}
			var p struct {
				Title string `json:"event_title"`
			}
			if err := json.Unmarshal(l.Data, &p); err != nil {
				t.Fatal(err)
			}
			if o, ok := offsets[p.Title]; ok {
				redelivered++
				if o != l.Offset {
					t.Fatalf("%s printed with offset %s, then %s", p.Title, o, l.Offset)
				}
			}
			offsets[p.Title] = l.Offset
		}
	}
	for i := 0; i < total; i++ {
		if _, ok := offsets[fmt.Sprintf("t-%04d", i)]; !ok {
			t.Fatalf("commit t-%04d was never printed", i)
		}
	}
	t.Logf("%d commits; first run printed %d lines, second %d; %d redelivered", total, len(runs[0]), len(runs[1]), redelivered)
}

// tailLines parses printed lines; a killed process may have left its last
// line unfinished.
func tailLines(t *testing.T, out string, killed bool) []line {
	t.Helper()
	if killed && !strings.HasSuffix(out, "\n") {
		if i := strings.LastIndexByte(out, '\n'); i >= 0 {
			out = out[:i+1]
		} else {
			out = ""
		}
	}
	return parseLines(t, out)
}

// TestTailUserErrors: what the user must fix ends tail with exit status 2
// and one line on stderr that says what is wrong.
func TestTailUserErrors(t *testing.T) {
	closedPort := func() string {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/koordi?sslmode=disable&connect_timeout=5", l.Addr().(*net.TCPAddr).Port)
	}
	replicaCluster := func() string {
		c, err := pgcluster.Start(context.Background(), pgcluster.Config{Settings: map[string]string{"wal_level": "replica"}})
		if err != nil {
			pgcluster.Require(t, nil)
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Stop() })
		url, err := c.CreateDatabase(context.Background(), "koordi")
		if err != nil {
			t.Fatal(err)
		}
		conn := pgcluster.Connect(t, url)
		if err := ksql.Migrate(context.Background(), conn); err != nil {
			t.Fatal(err)
		}
		if err := ksql.Setup(context.Background(), conn, "koordi_realtime"); err != nil {
			t.Fatal(err)
		}
		return url
	}
	slotInUse := func() string {
		db := newTestDB(t)
		db.setup()
		p := startInProcess(t, map[string]string{"DATABASE_URL": db.url, "TAIL_SLOT_NAME": "busy_slot"}, "tail")
		waitLogged(t, &p.stderr, "streaming started")
		return db.url
	}
	tests := []struct {
		name string
		url  func() string
		want string
	}{
		{"missing DATABASE_URL", func() string { return "" }, "DATABASE_URL is not set"},
		{"unreachable database", closedPort, "cannot connect to PostgreSQL"},
		{"wal_level replica", replicaCluster, "wal_level is not logical"},
		{"missing tables", func() string { return pgcluster.NewDatabase(t, cluster) }, "watched table missing"},
		{"no setup", func() string {
			url := pgcluster.NewDatabase(t, cluster)
			if err := ksql.Migrate(context.Background(), pgcluster.Connect(t, url)); err != nil {
				t.Fatal(err)
			}
			return url
		}, "replica identity is not FULL"},
		{"slot active elsewhere", slotInUse, "in use by another process"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr syncBuffer
			vars := map[string]string{"DATABASE_URL": tt.url(), "TAIL_SLOT_NAME": "busy_slot"}
			code := run(context.Background(), envOf(vars, &stdout, &stderr), []string{"tail"})
			msg := stderr.String()
			if code != 2 {
				t.Fatalf("exit %d, want 2; stderr:\n%s", code, msg)
			}
			if strings.Count(msg, "\n") != 1 || !strings.HasPrefix(msg, "koordi-realtime tail: ") || !strings.Contains(msg, tt.want) {
				t.Fatalf("stderr %q: want one line naming %q", msg, tt.want)
			}
			t.Log(strings.TrimSpace(msg))
		})
	}
}
