package cdc

import (
	"testing"
	"time"
)

// TestCaughtUpSignal: after a (re)start the consumer first decodes the replay
// window (and any backlog) again; CaughtUp closes only once everything up to
// the target (the server's WAL position read at start) is handed off, and
// the target does not move when new WAL arrives meanwhile, so a busy
// database cannot keep sockets out forever.
func TestCaughtUpSignal(t *testing.T) {
	cfg := Config{ConnString: "postgres://unused"}
	if err := cfg.fill(); err != nil {
		t.Fatal(err)
	}
	c := newConsumer(cfg, newRecorder())
	open := func() bool {
		select {
		case <-c.CaughtUp():
			return true
		default:
			return false
		}
	}
	now := time.Now()
	steps := []struct {
		name string
		do   func()
		open bool
	}{
		{"not streaming", func() {}, false},
		{"streaming, target not read yet", func() { c.setStreaming(true); c.checkCaughtUp() }, false},
		{"decoding the window again", func() { c.setTarget(0x5000); c.ack.handOff(0x1000, 0x0F00, now); c.checkCaughtUp() }, false},
		{"new WAL arrives meanwhile: the target stays", func() {
			c.observe(0x4FFF, 0x9000)
			c.setTarget(0x9000) // only the first target counts
			c.ack.handOff(0x4FFF, 0x4F00, now)
			c.checkCaughtUp()
		}, false},
		{"caught up with the target", func() { c.ack.handOff(0x5000, 0x4FF0, now); c.checkCaughtUp() }, true},
		{"stays open across a reconnect", func() { c.setStreaming(false); c.checkCaughtUp() }, true},
	}
	for _, step := range steps {
		step.do()
		if got := open(); got != step.open {
			t.Fatalf("%s: caught up = %v, want %v", step.name, got, step.open)
		}
	}
}
