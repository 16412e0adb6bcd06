package scenario

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// A machine stall is a stretch in which the machine did not run a process
// that does nothing but sleep for a millisecond at a time (StallProbeMain,
// in a process of its own). On the 2-vCPU machines of 2026-12-03 such a
// probe saw stalls of 130–200 ms about once a minute with nothing else
// running, which no server on the machine can help: one of them in a
// 10-s latency step is enough to put that step's p99 over 25 ms, whatever
// server runs. A sleeper that wakes is run within a few milliseconds by
// Linux's scheduler even with both cores busy: near saturation the probe
// saw 10–27 ms, so only a stall of twice the latency goal
// (machineStallMin) is taken for the machine's own, not the load's.

// MachineStall is a stall the probe saw, from the step's first write.
type MachineStall struct {
	At   time.Duration `json:"at_ns"`
	Span time.Duration `json:"span_ns"`
}

// stallProbeMin is the shortest stall the probe reports.
const stallProbeMin = 10 * time.Millisecond

// machineStallMin is the shortest probe stall taken for the machine's own,
// as a multiple of the latency goal (see above).
const machineStallMin = 2

// StallProbeMain is `koordi-bench stall-probe`: it sleeps 1 ms at a time
// and prints each time it woke at least --min late, as
// "<start unix ns> <span ns>", until its stdin closes.
func StallProbeMain(ctx context.Context, args []string, in io.Reader, out io.Writer) error {
	fs := flag.NewFlagSet("stall-probe", flag.ContinueOnError)
	minStall := fs.Duration("min", stallProbeMin, "shortest stall reported")
	if err := fs.Parse(args); err != nil {
		return err
	}
	// One thread: the probe measures the machine, not Go's scheduler.
	runtime.GOMAXPROCS(1)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() { _, _ = io.Copy(io.Discard, in); cancel() }()
	w := bufio.NewWriter(out)
	for ctx.Err() == nil {
		t := time.Now()
		time.Sleep(time.Millisecond)
		woke := time.Now()
		if late := woke.Sub(t) - time.Millisecond; late >= *minStall {
			fmt.Fprintf(w, "%d %d\n", t.Add(time.Millisecond).UnixNano(), int64(late))
			if err := w.Flush(); err != nil {
				return err
			}
		}
	}
	return nil
}

// stallProbe runs StallProbeMain beside a scenario and keeps what it saw.
type stallProbe struct {
	cmd   *exec.Cmd
	stdin io.Closer
	done  chan struct{} // the reader of its output has ended

	mu     sync.Mutex
	stalls [][2]int64 // start unix ns, span ns

	// ended is set when its output ends, stopping when stop began, told
	// once gone has said so.
	ended, stopping, told atomic.Bool
}

// startStallProbe starts bench's stall probe.
func startStallProbe(benchBin string) (*stallProbe, error) {
	cmd := exec.Command(benchBin, "stall-probe")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("stall probe: %w", err)
	}
	p := &stallProbe{cmd: cmd, stdin: stdin, done: make(chan struct{})}
	go p.read(stdout)
	return p, nil
}

func (p *stallProbe) read(r io.Reader) {
	defer close(p.done)
	defer p.ended.Store(true)
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		if s, ok := parseStall(sc.Text()); ok {
			p.mu.Lock()
			p.stalls = append(p.stalls, s)
			p.mu.Unlock()
		}
	}
}

// parseStall reads one line of StallProbeMain's.
func parseStall(line string) ([2]int64, bool) {
	a, b, ok := strings.Cut(strings.TrimSpace(line), " ")
	if !ok {
		return [2]int64{}, false
	}
	at, err1 := strconv.ParseInt(a, 10, 64)
	span, err2 := strconv.ParseInt(b, 10, 64)
	if err1 != nil || err2 != nil || span < 0 {
		return [2]int64{}, false
	}
	return [2]int64{at, span}, true
}

// between is the stalls that began in [from, to), relative to from.
func (p *stallProbe) between(from, to time.Time) []MachineStall {
	if p == nil {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []MachineStall
	for _, s := range p.stalls {
		if s[0] >= from.UnixNano() && s[0] < to.UnixNano() {
			out = append(out, MachineStall{At: time.Duration(s[0] - from.UnixNano()), Span: time.Duration(s[1])})
		}
	}
	return out
}

// gone says, the first time it is asked after, that the probe ended before
// it was stopped (killed, say): from then on it sees no stall, and no step
// is run again for one.
func (p *stallProbe) gone() bool {
	return p != nil && p.ended.Load() && !p.stopping.Load() && p.told.CompareAndSwap(false, true)
}

// stop ends the probe: its stdin closes, it exits.
func (p *stallProbe) stop() error {
	if p == nil {
		return nil
	}
	p.stopping.Store(true)
	_ = p.stdin.Close()
	<-p.done
	err := p.cmd.Wait()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return fmt.Errorf("stall probe: %w", err)
	}
	return err
}

// machineStalled says whether a step that missed the latency goal missed
// it because of machine stalls alone: every slow window whose deliveries
// reach into the recorded part (after warmup) lies within the reach of a
// stall of at least machineStallMin × limit — its writes from at most the
// stall's length plus limit before it (they waited through it) to the
// stall's length again plus limit after it (the backlog it left drains) —
// and was late by no more than the stall's length plus limit and a slot;
// and there is at least one such window. A long window, or one far later
// than a stall, is the server's own.
func machineStalled(slow []SlowWindow, stalls []MachineStall, warmup, limit time.Duration) bool {
	counted := 0
	for _, w := range slow {
		if w.At+w.Span+w.Worst < warmup {
			continue // delivered within the warmup: not in the p99
		}
		counted++
		explained := false
		for _, s := range stalls {
			// A write made up to w.Worst before the stall waits through it.
			reach := s.Span + limit
			if s.Span >= machineStallMin*limit && w.At >= s.At-reach && w.At+w.Span <= s.At+s.Span+reach &&
				w.Worst <= reach+timelineSlot {
				explained = true
				break
			}
		}
		if !explained {
			return false
		}
	}
	return counted > 0
}
