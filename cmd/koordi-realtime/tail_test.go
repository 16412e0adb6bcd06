package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/koordi/koordi-realtime/schema"
	ksql "github.com/koordi/koordi-realtime/sql"
	"github.com/koordi/koordi-realtime/sql/pgcluster"
)

// tailDB creates a database with Koordi's tables and the service's objects
// and returns its URL and a connection.
func tailDB(t *testing.T) (string, *pgx.Conn) {
	t.Helper()
	url := pgcluster.NewDatabase(t, cluster)
	conn := tailDial(t, url)
	if err := ksql.Migrate(context.Background(), conn); err != nil {
		t.Fatal(err)
	}
	if err := ksql.Setup(context.Background(), conn, "koordi_realtime"); err != nil {
		t.Fatal(err)
	}
	return url, conn
}

func tailDial(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func tailExec(t *testing.T, conn *pgx.Conn, sql string, args ...any) {
	t.Helper()
	if _, err := conn.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// tailSlot names a slot after the test's database (slot names are
// cluster-wide).
func tailSlot(url string) string {
	db := url[strings.LastIndex(url, "/")+1:]
	db, _, _ = strings.Cut(db, "?")
	return "tail_" + db
}

// syncBuffer is a bytes.Buffer safe for one writer and polling readers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func envOf(vars map[string]string, stdout, stderr *syncBuffer) *environment {
	return &environment{stdout: stdout, stderr: stderr, getenv: func(k string) string { return vars[k] }}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

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

func seedCalendar(t *testing.T, conn *pgx.Conn) {
	t.Helper()
	tailExec(t, conn, `INSERT INTO users (id, email, name) VALUES ($1, 'ada@example.com', 'Ada')`, tailUser)
	tailExec(t, conn, `INSERT INTO children (id, name) VALUES ($1, 'Kid')`, tailChild)
	tailExec(t, conn, `INSERT INTO event_calendars (id, name, ics_url, child_id, owner_id) VALUES ($1, 'Soccer', 'https://example.com/a.ics', $2, $3)`,
		tailCal, tailChild, tailUser)
}

// TestTailPrintsEvents runs tail in-process: it prints each derived event as
// one JSON line and exits 0 when its context ends (SIGINT/SIGTERM in main).
func TestTailPrintsEvents(t *testing.T) {
	url, conn := tailDB(t)
	var stdout, stderr syncBuffer
	env := envOf(map[string]string{"DATABASE_URL": url, "TAIL_SLOT_NAME": tailSlot(url)}, &stdout, &stderr)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	code := make(chan int, 1)
	go func() { code <- run(ctx, env, []string{"tail"}) }()
	waitUntil(t, "streaming", func() bool { return strings.Contains(stderr.String(), "streaming started") })

	seedCalendar(t, conn)
	tailExec(t, conn, `INSERT INTO events (event_calendar_id, ics_uid, title, start_time, end_time) VALUES ($1, 'u1', 'Practice', now(), now())`, tailCal)
	waitUntil(t, "event:created", func() bool { return strings.Contains(stdout.String(), `"event:created"`) })
	cancel()
	if c := <-code; c != 0 {
		t.Fatalf("exit %d, stderr:\n%s", c, stderr.String())
	}
	lines := parseLines(t, stdout.String())
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

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// binary builds koordi-realtime once for the tests that run it as a process.
func binary(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		dir, err := os.MkdirTemp("", "koordi-bin-")
		if err != nil {
			binErr = err
			return
		}
		binPath = filepath.Join(dir, "koordi-realtime")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			binErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

// scanLines collects a process's stdout lines.
func scanLines(r *bufio.Scanner, into *syncBuffer) {
	for r.Scan() {
		_, _ = into.Write(append(r.Bytes(), '\n'))
	}
}
