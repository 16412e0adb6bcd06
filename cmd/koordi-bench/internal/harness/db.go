package harness

import (
	"context"
	"fmt"
	"maps"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"

	ksql "github.com/koordi/koordi-realtime/sql"
	"github.com/koordi/koordi-realtime/sql/pgcluster"
)

// Publication is the publication name the harness creates and both
// koordi-realtime and pg_recvlogical stream.
const Publication = "koordi_realtime"

// StartCluster starts a throwaway cluster sized for the benchmarks and
// returns it with the URL of a migrated, set-up database "koordi". extra
// adds to or overrides the cluster's settings (koordi-bench --pg-setting).
func StartCluster(ctx context.Context, extra map[string]string) (*pgcluster.Cluster, string, error) {
	settings := map[string]string{
		"max_connections":    "400",
		"shared_buffers":     "256MB",
		"max_wal_size":       "4GB",
		"checkpoint_timeout": "30min",
		"wal_sender_timeout": "60s",
		"log_min_messages":   "error",
	}
	maps.Copy(settings, extra)
	c, err := pgcluster.Start(ctx, pgcluster.Config{Settings: settings})
	if err != nil {
		return nil, "", err
	}
	url, err := c.CreateDatabase(ctx, "koordi")
	if err != nil {
		_ = c.Stop()
		return nil, "", err
	}
	if err := Prepare(ctx, url); err != nil {
		_ = c.Stop()
		return nil, "", err
	}
	return c, url, nil
}

// Prepare migrates Koordi's tables and runs setup (publication, replica
// identity FULL, emit function) in the database at url.
func Prepare(ctx context.Context, url string) error {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(ctx)
	if err := ksql.Migrate(ctx, conn); err != nil {
		return err
	}
	return ksql.Setup(ctx, conn, Publication)
}

// Topology is the seeded population: Users users, Calendars calendars, each
// user an accepted member of one calendar (user u of calendar u mod
// Calendars), EventsPerCalendar events in each.
type Topology struct {
	Users             int `json:"users"`
	Calendars         int `json:"calendars"`
	EventsPerCalendar int `json:"events_per_calendar"`
}

// Deterministic ids: valid uuids whose last group is the index.
func UserID(i int) string     { return fmt.Sprintf("00000000-0000-4000-8000-%012x", i) }
func CalendarID(i int) string { return fmt.Sprintf("00000000-0000-4000-9000-%012x", i) }
func EventID(cal, i int) string {
	return fmt.Sprintf("00000000-%04x-4000-a000-%012x", i&0xffff, cal)
}

// CalendarOf is the calendar user u is a member of.
func (t Topology) CalendarOf(u int) int { return u % t.Calendars }

// Seed replaces the population with t (TRUNCATE, then set-based inserts).
func Seed(ctx context.Context, url string, t Topology) error {
	if t.Users < 1 || t.Calendars < 1 || t.EventsPerCalendar < 0 || t.EventsPerCalendar > 0xffff {
		return fmt.Errorf("seed: bad topology %+v", t)
	}
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return fmt.Errorf("seed: connect: %w", err)
	}
	defer conn.Close(ctx)
	uid := `('00000000-0000-4000-8000-' || lpad(to_hex(%s), 12, '0'))::uuid`
	cid := `('00000000-0000-4000-9000-' || lpad(to_hex(%s), 12, '0'))::uuid`
	stmts := []string{
		`TRUNCATE users, children, event_calendars, event_calendar_memberships, events, supplemental_events CASCADE`,
		fmt.Sprintf(`INSERT INTO users (id, email, name) SELECT %s, 'u' || u || '@bench.test', 'User ' || u FROM generate_series(0, $1::int - 1) u`, fmt.Sprintf(uid, "u")),
		`INSERT INTO children (id, name) VALUES ('00000000-0000-4000-b000-000000000000', 'Bench child')`,
		fmt.Sprintf(`INSERT INTO event_calendars (id, name, ics_url, child_id, owner_id) SELECT %s, 'Calendar ' || c, 'https://ics.test/' || c, '00000000-0000-4000-b000-000000000000', %s FROM generate_series(0, $2::int - 1) c`,
			fmt.Sprintf(cid, "c"), fmt.Sprintf(uid, "c % $1::int")),
		fmt.Sprintf(`INSERT INTO event_calendar_memberships (event_calendar_id, user_id, invited_email, invitation_token, status, invited_by_user_id)
			SELECT %s, %s, 'u' || u || '@bench.test', 'tok-' || u, 'accepted', %s FROM generate_series(0, $1::int - 1) u`,
			fmt.Sprintf(cid, "u % $2::int"), fmt.Sprintf(uid, "u"), fmt.Sprintf(uid, "(u % $2::int) % $1::int")),
		fmt.Sprintf(`INSERT INTO events (id, event_calendar_id, ics_uid, title, start_time, end_time)
			SELECT ('00000000-' || lpad(to_hex(e), 4, '0') || '-4000-a000-' || lpad(to_hex(c), 12, '0'))::uuid, %s, 'uid-' || e, 'seed', now(), now() + interval '1 hour'
			FROM generate_series(0, $2::int - 1) c, generate_series(0, $3::int - 1) e`, fmt.Sprintf(cid, "c")),
	}
	// Integers only, so substituting them is safe and keeps each
	// statement free of parameters whose types PostgreSQL cannot infer.
	r := strings.NewReplacer("$1::int", strconv.Itoa(t.Users), "$2::int", strconv.Itoa(t.Calendars), "$3::int", strconv.Itoa(t.EventsPerCalendar))
	for _, s := range stmts {
		if _, err := conn.Exec(ctx, r.Replace(s)); err != nil {
			return fmt.Errorf("seed: %w", err)
		}
	}
	return nil
}

// NotifyChannel is the channel the reference server LISTENs on.
const NotifyChannel = "koordi_bench"

// InstallNotifyTriggers makes every change of events NOTIFY the reference
// server with the room, event and payload koordi-realtime would derive
// (event:updated for detail changes, as the benchmarks write). This is what
// a Koordi without CDC does by hand after each write.
func InstallNotifyTriggers(ctx context.Context, url string) error {
	return execAll(ctx, url,
		`CREATE OR REPLACE FUNCTION koordi_bench_notify() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			PERFORM pg_notify('`+NotifyChannel+`', json_build_object(
				'room', 'calendar:' || NEW.event_calendar_id,
				'event', 'event:updated',
				'data', json_build_object('event_id', NEW.id, 'event_title', NEW.title,
					'event_calendar_id', NEW.event_calendar_id, 'changed', json_build_array('title')))::text);
			RETURN NULL;
		END $$`,
		`DROP TRIGGER IF EXISTS koordi_bench_notify ON events`,
		`CREATE TRIGGER koordi_bench_notify AFTER UPDATE OF title ON events FOR EACH ROW EXECUTE FUNCTION koordi_bench_notify()`,
	)
}

// DropNotifyTriggers removes what InstallNotifyTriggers made.
func DropNotifyTriggers(ctx context.Context, url string) error {
	return execAll(ctx, url, `DROP TRIGGER IF EXISTS koordi_bench_notify ON events`)
}

func execAll(ctx context.Context, url string, stmts ...string) error {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(ctx)
	for _, s := range stmts {
		if _, err := conn.Exec(ctx, s); err != nil {
			return fmt.Errorf("%.60s…: %w", s, err)
		}
	}
	return nil
}
