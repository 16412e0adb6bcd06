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
		{"at max", 3, 10 * extraWriterBacklog, 1, false, false},
		{"per running writer", 2, 2*extraWriterBacklog - 1, 1, false, false},
		{"eager", 1, 1, 100, true, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			started := 0
			p := &writerPool{max: 3, eager: tc.eager, start: func(func()) { started++ }}
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
	p.ready.push(&Conn{}) // an empty queue: a turn would take nothing and let it go
	p.run()
	if p.running != 1 || p.ready.n != 1 {
		t.Fatalf("after the extra writer's run: %d running, %d ready; want 1 and 1 (left to the other)", p.running, p.ready.n)
	}
	// The last writer takes the turns, coalescing or not; a turn that
	// carried nothing leaves the average as it was.
	p.run()
	if p.running != 0 || p.ready.n != 0 || p.turnAvg != coalescedTurn*16 {
		t.Fatalf("after the last writer's run: %d running, %d ready, average %d/16; want 0, 0 and %d/16", p.running, p.ready.n, p.turnAvg, coalescedTurn*16)
	}
}

// TestWriterPoolTurnAverage: the average follows the turns that carried
// packets, one huge turn counting as a few.
func TestWriterPoolTurnAverage(t *testing.T) {
	p := &writerPool{}
	for range 100 {
		p.noteTurn(20)
	}
	if !p.coalescing() {
		t.Fatalf("after 100 turns of 20 packets the average is %d/16: not coalescing", p.turnAvg)
	}
	for range 100 {
		p.noteTurn(1)
		p.noteTurn(0) // carried nothing: not counted
	}
	if p.coalescing() {
		t.Fatalf("after 100 one-packet turns the average is %d/16: coalescing", p.turnAvg)
	}
	before := p.turnAvg
	p.noteTurn(100000)
	if p.turnAvg > before+4*coalescedTurn*16/8 {
		t.Fatalf("one huge turn moved the average from %d to %d/16; want the sample capped at %d packets", before, p.turnAvg, 4*coalescedTurn)
	}
	for range 8 {
		p.noteTurn(1)
	}
	if p.coalescing() {
		t.Fatalf("8 one-packet turns after a huge one: average %d/16, still coalescing", p.turnAvg)
	}
}
