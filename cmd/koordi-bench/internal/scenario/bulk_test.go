package scenario

import (
	"slices"
	"testing"

	"github.com/koordi/koordi-realtime/cmd/koordi-bench/internal/harness"
)

func TestParseBulkShapes(t *testing.T) {
	got, err := ParseBulkShapes("300x667, 100x2000")
	if err != nil || !slices.Equal(got, []BulkShape{{300, 667}, {100, 2000}}) {
		t.Fatalf("got %v, %v", got, err)
	}
	for _, bad := range []string{"", "300", "x5", "3x0", "1x70000", "ax2"} {
		if _, err := ParseBulkShapes(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func TestParseEventID(t *testing.T) {
	for _, c := range [][2]int{{0, 0}, {299, 666}, {1_000_000, 0xffff}} {
		cal, ev, ok := parseEventID(harness.EventID(c[0], c[1]))
		if !ok || cal != c[0] || ev != c[1] {
			t.Errorf("EventID(%d, %d): got %d, %d, %v", c[0], c[1], cal, ev, ok)
		}
	}
	if _, _, ok := parseEventID(harness.CalendarID(3)); ok {
		t.Error("a calendar id parsed as an event id")
	}
}

func TestParseServerSpec(t *testing.T) {
	sp, err := parseServerSpec("koordi@bin/old+GOGC=50+GOMEMLIMIT=200MiB")
	if err != nil || sp.kind != "koordi" || sp.bin != "bin/old" || !slices.Equal(sp.env, []string{"GOGC=50", "GOMEMLIMIT=200MiB"}) {
		t.Fatalf("got %+v, %v", sp, err)
	}
	if sp, err := parseServerSpec("node"); err != nil || sp.kind != "node" || sp.bin != "" || sp.env != nil {
		t.Fatalf("node: %+v, %v", sp, err)
	}
	for _, bad := range []string{"node@x", "koordi@", "koordi+GOGC", "inproc+=1"} {
		if _, err := parseServerSpec(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}
