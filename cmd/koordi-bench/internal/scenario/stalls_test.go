package scenario

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"
	"time"
)

func TestMachineStalled(t *testing.T) {
	const (
		warmup = 2 * time.Second
		limit  = 25 * time.Millisecond
		ms     = time.Millisecond
	)
	win := func(at, span, worst time.Duration) SlowWindow { return SlowWindow{At: at, Span: span, Worst: worst} }
	stall := func(at, span time.Duration) MachineStall { return MachineStall{At: at, Span: span} }
	tests := []struct {
		name   string
		slow   []SlowWindow
		stalls []MachineStall
		want   bool
	}{
		{"late writes during a stall", []SlowWindow{win(6500*ms, 150*ms, 200*ms)}, []MachineStall{stall(6550*ms, 134*ms)}, true},
		{"written just before it, waiting through it", []SlowWindow{win(6400*ms, 50*ms, 180*ms)}, []MachineStall{stall(6500*ms, 134*ms)}, true},
		{"the backlog it left", []SlowWindow{win(6800*ms, 100*ms, 40*ms)}, []MachineStall{stall(6500*ms, 200*ms)}, true},
		{"no stall", []SlowWindow{win(6500*ms, 150*ms, 200*ms)}, nil, false},
		{"a stall elsewhere in the step", []SlowWindow{win(3000*ms, 150*ms, 200*ms)}, []MachineStall{stall(8000*ms, 150*ms)}, false},
		{"a stall shorter than the goal", []SlowWindow{win(6500*ms, 150*ms, 200*ms)}, []MachineStall{stall(6550*ms, 15*ms)}, false},
		{"a stall the load can make (under twice the goal)", []SlowWindow{win(3200*ms, 100*ms, 78*ms)}, []MachineStall{stall(3220*ms, 27*ms)}, false},
		{"one window explained, one not", []SlowWindow{win(3000*ms, 400*ms, 90*ms), win(6500*ms, 150*ms, 200*ms)}, []MachineStall{stall(6550*ms, 134*ms)}, false},
		{"the unexplained one delivered within the warmup", []SlowWindow{win(500*ms, 100*ms, 90*ms), win(6500*ms, 150*ms, 200*ms)}, []MachineStall{stall(6550*ms, 134*ms)}, true},
		{"a long window of a saturated server, a short stall in it", []SlowWindow{win(3000*ms, 7000*ms, 4000*ms)}, []MachineStall{stall(9000*ms, 60*ms)}, false},
		{"later by far more than the stall", []SlowWindow{win(6500*ms, 100*ms, 900*ms)}, []MachineStall{stall(6520*ms, 60*ms)}, false},
		{"long after the stall", []SlowWindow{win(7200*ms, 100*ms, 60*ms)}, []MachineStall{stall(6500*ms, 134*ms)}, false},
		{"nothing slow after the warmup", []SlowWindow{win(500*ms, 100*ms, 90*ms)}, []MachineStall{stall(550*ms, 134*ms)}, false},
	}
	for _, tt := range tests {
		if got := machineStalled(tt.slow, tt.stalls, warmup, limit); got != tt.want {
			t.Errorf("%s: got %v, want %v", tt.name, got, tt.want)
		}
	}
}

// TestStallProbe: the probe reports each late wake-up as a line the
// scenario parses, and ends when its stdin closes.
func TestStallProbe(t *testing.T) {
	in := &closingReader{after: 100 * time.Millisecond}
	var out bytes.Buffer
	done := make(chan error, 1)
	go func() { done <- StallProbeMain(context.Background(), []string{"--min", "1ns"}, in, &out) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the probe did not end when its stdin closed")
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) < 1 || lines[0] == "" {
		t.Fatalf("no wake-up reported in 100 ms with --min 1ns: %q", out.String())
	}
	for _, l := range lines {
		s, ok := parseStall(l)
		if !ok || s[0] < time.Now().Add(-time.Minute).UnixNano() || s[1] <= 0 {
			t.Fatalf("line %q: %v %v", l, s, ok)
		}
	}
	for _, bad := range []string{"", "12", "a b", "12 -3", "12 3 4"} {
		if _, ok := parseStall(bad); ok {
			t.Errorf("%q parsed", bad)
		}
	}
	p := &stallProbe{stalls: [][2]int64{{1000, 5}, {2000, 7}, {3000, 9}}}
	got := p.between(time.Unix(0, 1500), time.Unix(0, 3000))
	if len(got) != 1 || got[0] != (MachineStall{At: 500, Span: 7}) {
		t.Fatalf("between: %+v", got)
	}
}

// closingReader blocks, then reports EOF after a while, as a pipe whose
// writer closes.
type closingReader struct{ after time.Duration }

func (r *closingReader) Read([]byte) (int, error) {
	time.Sleep(r.after)
	return 0, io.EOF
}

// TestStallRetry: only a step that missed the goal by its p99 alone, with
// every late delivery at a machine stall, is run again; a step that lost
// deliveries, dropped a client or fell short of the offered rate keeps its
// miss whatever stalls it met.
func TestStallRetry(t *testing.T) {
	cfg := SweepConfig{KneeP99: 25 * time.Millisecond, MinDelivered: 0.95, Warmup: 2 * time.Second}
	stalled := stepRow("k", 450, 110, 1, 0)
	stalled.Slow = []SlowWindow{{At: 6500 * time.Millisecond, Span: 150 * time.Millisecond, Worst: 200 * time.Millisecond}}
	stalled.MachineStalls = []MachineStall{{At: 6550 * time.Millisecond, Span: 134 * time.Millisecond}}
	lost := stalled
	lost.Accounting.Lost = 3
	dropped := stalled
	dropped.Accounting.Dropped = 1
	short := stalled
	short.DeliveredRatio = 0.9
	met := stalled
	met.Latency.P99 = 20 * time.Millisecond
	noStall := stalled
	noStall.MachineStalls = nil
	for _, tt := range []struct {
		name string
		row  SweepRow
		want bool
	}{
		{"p99 missed at a stall", stalled, true},
		{"lost deliveries", lost, false},
		{"a client dropped", dropped, false},
		{"the offered rate not delivered", short, false},
		{"the goal met", met, false},
		{"no stall", noStall, false},
	} {
		if got := cfg.stallRetry(tt.row); got != tt.want {
			t.Errorf("%s: got %v, want %v", tt.name, got, tt.want)
		}
	}
}

// TestStallProbeGone: a probe whose output ends before it is stopped (it
// was killed) is said to be gone, once; one stopped is not.
func TestStallProbeGone(t *testing.T) {
	p := &stallProbe{done: make(chan struct{})}
	p.read(strings.NewReader("12 3\n"))
	if !p.gone() || p.gone() {
		t.Fatal("a probe whose output ended is not said to be gone exactly once")
	}
	q := &stallProbe{done: make(chan struct{})}
	q.stopping.Store(true)
	q.read(strings.NewReader(""))
	if q.gone() {
		t.Fatal("a stopped probe said to be gone")
	}
}
