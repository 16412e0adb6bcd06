package derive

import (
	"context"
	"strings"
	"testing"

	"github.com/koordi/koordi-realtime/cdc/wal"
)

// TestEmitIsExplicit: an emitted event is marked Explicit whatever its name,
// so the serve wiring never moves sockets for it (SQL saying member:added
// with no user would otherwise stop the stream), and an upper-case room id
// is lower-cased to the room sockets are in. Derived events are not Explicit.
func TestEmitIsExplicit(t *testing.T) {
	d := New(Config{})
	if err := d.Bootstrap(context.Background(), baseQuerier()); err != nil {
		t.Fatal(err)
	}
	envs := d.Derive(&wal.Tx{CommitLSN: 0x100, Changes: []wal.Change{
		msg(`{"room": "calendar:` + strings.ToUpper(C1) + `", "event": "member:added", "data": {}}`),
		ins(tE, eventRow(E3, C1, "Later")),
	}})
	if len(envs) != 2 {
		t.Fatalf("derived %d envelopes, want 2: %+v", len(envs), envs)
	}
	if e := envs[0]; !e.Explicit || e.Room != "calendar:"+C1 || e.Event != "member:added" {
		t.Errorf("emitted envelope: explicit=%v room=%q event=%q", e.Explicit, e.Room, e.Event)
	}
	if envs[1].Explicit {
		t.Errorf("derived %s marked explicit", envs[1].Event)
	}
}
