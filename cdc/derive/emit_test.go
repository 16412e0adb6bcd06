package derive

import (
	"context"
	"strings"
	"testing"

	"github.com/koordi/koordi-realtime/cdc/wal"
	"github.com/koordi/koordi-realtime/schema"
)

// TestEmitMovesNoSocket: an emitted event never moves a socket, whatever its
// name — SQL may say member:added, but only a membership row makes a member —
// and an upper-case room id is lower-cased to the room sockets are in. The
// same name derived from a membership row does move.
func TestEmitMovesNoSocket(t *testing.T) {
	d := New(Config{})
	if err := d.Bootstrap(context.Background(), baseQuerier()); err != nil {
		t.Fatal(err)
	}
	tx := d.Derive(&wal.Tx{CommitLSN: 0x100, Changes: []wal.Change{
		msg(`{"room": "calendar:` + strings.ToUpper(C1) + `", "event": "member:added", "data": {"user_id": "` + U4 + `"}}`),
		msg(`{"room": "calendar:` + C1 + `", "event": "calendar:deleted", "data": {}}`),
		ins(tE, eventRow(E3, C1, "Later")),
	}})
	if len(tx.Events) != 3 {
		t.Fatalf("derived %d envelopes, want 3: %+v", len(tx.Events), tx.Events)
	}
	if e := tx.Events[0]; e.Room != "calendar:"+C1 || e.Event != schema.MemberAdded {
		t.Errorf("emitted envelope: room=%q event=%q", e.Room, e.Event)
	}
	if len(tx.Moves) != 0 {
		t.Errorf("emitted events moved sockets: %+v", tx.Moves)
	}

	derived := d.Derive(&wal.Tx{CommitLSN: 0x200, Changes: []wal.Change{
		ins(tM, memberRowOf(M4, C1, U4, "dave@example.com", "accepted")),
	}})
	want := []schema.Move{{At: 0, Op: schema.MoveJoin, User: U4, Room: schema.CalendarRoom(C1)}}
	if len(derived.Moves) != 1 || derived.Moves[0] != want[0] {
		t.Errorf("derived member:added moves %+v, want %+v", derived.Moves, want)
	}
}
