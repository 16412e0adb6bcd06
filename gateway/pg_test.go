package gateway

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	ksql "github.com/koordi/koordi-realtime/sql"
	"github.com/koordi/koordi-realtime/sql/pgcluster"
)

func TestPGMemberships(t *testing.T) {
	url := pgcluster.NewDatabase(t, cluster)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if err := ksql.Migrate(ctx, conn); err != nil {
		t.Fatal(err)
	}
	owner, member, invited := uuid(0x31), uuid(0x32), uuid(0x33)
	cal1, cal2 := uuid(0x41), uuid(0x42)
	seed := strings.NewReplacer("$1", "'"+owner+"'", "$2", "'"+member+"'", "$3", "'"+invited+"'", "$4", "'"+cal1+"'", "$5", "'"+cal2+"'")
	_, err = conn.Exec(ctx, seed.Replace(`
		INSERT INTO users (id, email, name) VALUES ($1, 'o@x', 'Owner'), ($2, 'm@x', 'Member'), ($3, 'i@x', 'Invited');
		INSERT INTO children (id, name) VALUES ('00000000-0000-4000-8000-000000000051', 'Kid');
		INSERT INTO event_calendars (id, name, ics_url, child_id, owner_id) VALUES
			($4, 'One', 'https://x/1.ics', '00000000-0000-4000-8000-000000000051', $1),
			($5, 'Two', 'https://x/2.ics', '00000000-0000-4000-8000-000000000051', $1);
		INSERT INTO event_calendar_memberships (event_calendar_id, user_id, invited_email, invitation_token, status, invited_by_user_id) VALUES
			($4, $1, 'o@x', 't1', 'accepted', $1),
			($5, $1, 'o@x', 't2', 'accepted', $1),
			($4, $2, 'm@x', 't3', 'accepted', $1),
			($5, $2, 'm@x', 't4', 'declined', $1),
			($4, NULL, 'i@x', 't5', 'pending', $1);`))
	if err != nil {
		t.Fatal(err)
	}
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	m := PGMemberships{Pool: pool}
	for _, tt := range []struct {
		user string
		want []string
	}{
		{owner, []string{cal1, cal2}},
		{member, []string{cal1}},
		{invited, nil},
	} {
		got, err := m.AcceptedCalendars(ctx, tt.user)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, tt.want) {
			t.Errorf("AcceptedCalendars(%s) = %v, want %v", tt.user, got, tt.want)
		}
		for _, cal := range []string{cal1, cal2} {
			ok, err := m.IsAcceptedMember(ctx, tt.user, cal)
			if err != nil {
				t.Fatal(err)
			}
			if want := slices.Contains(tt.want, cal); ok != want {
				t.Errorf("IsAcceptedMember(%s, %s) = %v, want %v", tt.user, cal, ok, want)
			}
		}
	}
}
