package scenario

import (
	"bytes"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/koordi/koordi-realtime/cmd/koordi-bench/internal/stats"
	"github.com/koordi/koordi-realtime/schema"
)

func TestSubjectsOrder(t *testing.T) {
	for _, tc := range []struct {
		reps int
		want []string
	}{
		{0, nil},
		{1, []string{LayoutOne, LayoutRoom}},
		{2, []string{LayoutOne, LayoutRoom, LayoutRoom, LayoutOne}},
		{3, []string{LayoutOne, LayoutRoom, LayoutRoom, LayoutOne, LayoutOne, LayoutRoom}},
	} {
		if got := subjectsOrder(tc.reps); !slices.Equal(got, tc.want) {
			t.Errorf("subjectsOrder(%d) = %v, want %v", tc.reps, got, tc.want)
		}
	}
}

func TestWantedRooms(t *testing.T) {
	for _, tc := range []struct {
		rooms, n int
		want     []int // nil: only checked for count, range and spread
	}{
		{10, 5, []int{0, 2, 4, 6, 8}},
		{10, 3, []int{0, 3, 6}},
		{4, 10, []int{0, 1, 2, 3}},
		{10_000, 1_000, nil},
		{1_000, 7, nil},
	} {
		got := wantedRooms(tc.rooms, tc.n)
		if tc.want != nil && !slices.Equal(got, tc.want) {
			t.Errorf("wantedRooms(%d, %d) = %v, want %v", tc.rooms, tc.n, got, tc.want)
		}
		if len(got) != min(tc.rooms, tc.n) {
			t.Errorf("wantedRooms(%d, %d): %d rooms", tc.rooms, tc.n, len(got))
		}
		for i, id := range got {
			if id < 0 || id >= tc.rooms || i > 0 && id <= got[i-1] {
				t.Fatalf("wantedRooms(%d, %d): %v is not increasing within [0, %d)", tc.rooms, tc.n, got, tc.rooms)
			}
		}
	}
}

func TestSubjectNames(t *testing.T) {
	for _, tc := range []struct{ got, want string }{
		{streamSubject(LayoutOne, "S"), "S.tx"},
		{streamSubject(LayoutRoom, "S"), "S.room.*"},
		{roomSubject("S", 42), "S.room.42"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
}

// The payload is a transaction the feed's subscriber accepts, of the size
// asked for (or the smallest there is).
func TestFeedPayload(t *testing.T) {
	smallest := len(feedPayload(0))
	for _, size := range []int{0, 1, smallest, smallest + 1, 300, 1000} {
		b := feedPayload(size)
		if want := max(size, smallest); len(b) != want {
			t.Errorf("feedPayload(%d): %d bytes, want %d", size, len(b), want)
		}
		tx, err := schema.DecodeTransaction(b)
		if err != nil || len(tx.Events) != 1 {
			t.Fatalf("feedPayload(%d) = %s: %v", size, b, err)
		}
	}
	if smallest > 400 {
		t.Errorf("an event without a title is %d bytes, over the 400 the scenario defaults to", smallest)
	}
}

func TestSubjectsRatios(t *testing.T) {
	row := func(layout string, pub float64, allSecs float64, extra ...SubjectsRead) SubjectsRow {
		return SubjectsRow{Layout: layout, Messages: 100, PublishPerSec: pub, PublishCPU: 1,
			Ack:   stats.Summary{P50: time.Millisecond, P99: 4 * time.Millisecond},
			Reads: append([]SubjectsRead{{Consumer: readAll, Read: 100, Seconds: allSecs, PerSec: 100 / allSecs, ServerCPU: 1}}, extra...),
			Start: []SubjectsLookup{{Call: callLast, Latency: stats.Summary{Count: 1, P50: time.Millisecond}}}}
	}
	rows := []SubjectsRow{
		row(LayoutOne, 100, 1),
		row(LayoutRoom, 50, 2, SubjectsRead{Consumer: readFilter, Read: 10, Seconds: 4}),
		row(LayoutRoom, 70, 2, SubjectsRead{Consumer: readFilter, Read: 10, Seconds: 8}),
		row(LayoutOne, 100, 1),
		{Layout: LayoutOne, PublishPerSec: 1, Failed: "boom"}, // not counted
	}
	want := map[string]float64{
		"publish msgs/s":                      0.6,
		"ack p99":                             1,
		"read all msgs/s":                     0.5,
		"last msg for the stream subject p50": 1,
		"secs to read 3 rooms (filter)":       6,
	}
	got := map[string]float64{}
	for _, r := range subjectsRatios(rows, 3) {
		got[r.Figure] = r.Value
		if r.Goal != "" {
			t.Errorf("%s: a goal %q; these ratios are reported, not judged", r.Figure, r.Goal)
		}
	}
	for f, v := range want {
		if g, ok := got[f]; !ok || math.Abs(g-v) > 1e-9 {
			t.Errorf("%s = %v (present %v), want %v", f, g, ok, v)
		}
	}
	if _, ok := got["secs to read 3 rooms (wildcard)"]; ok {
		t.Error("a wildcard ratio without a wildcard read")
	}
	var buf bytes.Buffer
	(&Report{Scenario: "subjects", Rows: rows, Summary: subjectsSummary(rows)}).Print(&buf)
	for _, s := range []string{"per-room", "filter wanted/s", "recover secs", "boom", "one       mean: publish 100 msgs/s"} {
		if !strings.Contains(buf.String(), s) {
			t.Errorf("printed report lacks %q:\n%s", s, buf.String())
		}
	}
}
