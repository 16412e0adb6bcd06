package engineio

import "testing"

// TestWriterPoolStartsExtraWritersOnlyWithoutCoalescing: beside a running
// writer another starts only when many connections wait and recent turns
// carried a frame or two each (each delivery its own write(2), so a second
// core is worth having); turns of many frames mean the writers coalesce,
// and another would split their writes.
func TestWriterPoolStartsExtraWritersOnlyWithoutCoalescing(t *testing.T) {
	cases := []struct {
		name    string
		running int
		ready   int // connections waiting, c included
		turnAvg int // packets per turn
		eager   bool
		want    bool
	}{
		{"none running", 0, 1, 100, false, true},
		{"behind, single frames", 1, extraWriterBacklog, 1, false, true},
		{"behind, just under coalescing", 1, extraWriterBacklog, coalescedTurn - 1, false, true},
		{"behind, coalescing", 1, extraWriterBacklog, coalescedTurn, false, false},
		{"few waiting", 1, extraWriterBacklog - 1, 1, false, false},
		{"at max", 2, 10 * extraWriterBacklog, 1, false, false},
		{"eager", 1, 1, 100, true, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			started := 0
			p := &writerPool{max: 2, eager: tc.eager, start: func(func()) { started++ }}
			p.running, p.turnAvg = tc.running, tc.turnAvg*16
			for range tc.ready - 1 {
				p.ready.push(&Conn{})
			}
			p.push(&Conn{})
			if got := started == 1; got != tc.want {
				t.Fatalf("started %d writers, want a new one: %v", started, tc.want)
			}
			if want := tc.running + started; p.running != want {
				t.Fatalf("running %d, want %d", p.running, want)
			}
		})
	}
}

// TestWriterPoolExtraWriterEndsWhenCoalescing: a writer beside another ends
// at its next turn once turns coalesce, leaving the connections to the
// other; the last writer keeps going.
func TestWriterPoolExtraWriterEndsWhenCoalescing(t *testing.T) {
	p := &writerPool{max: 2, start: func(func()) {}}
	p.running, p.turnAvg = 2, coalescedTurn*16
	// A zero Conn would panic in writeTurn: run must not take it.
	p.ready.push(&Conn{})
	p.run()
	if p.running != 1 || p.ready.n != 1 {
		t.Fatalf("after the extra writer's run: %d running, %d ready; want 1 and 1", p.running, p.ready.n)
	}
}
