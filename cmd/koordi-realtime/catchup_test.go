package main

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/koordi/koordi-realtime/cdc"
)

// TestSocketsWaitForCatchUp: after a (re)start the consumer first decodes
// the replay window (and any backlog) again; sockets are let in only once
// everything up to the WAL position seen at the start of streaming is handed
// off, so a fresh socket never gets the re-decoded past as live events.
func TestSocketsWaitForCatchUp(t *testing.T) {
	var mu sync.Mutex
	st := cdc.Status{}
	set := func(f func(*cdc.Status)) { mu.Lock(); f(&st); mu.Unlock() }
	s := &server{
		log:    slog.New(slog.NewTextHandler(io.Discard, nil)),
		status: func() cdc.Status { mu.Lock(); defer mu.Unlock(); return st },
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- s.awaitCatchUp(ctx) }()

	steps := []struct {
		name string
		set  func(*cdc.Status)
		open bool
	}{
		{"not streaming", func(*cdc.Status) {}, false},
		{"streaming, server position not known yet", func(st *cdc.Status) { st.Streaming = true }, false},
		{"decoding the window again", func(st *cdc.Status) { st.ServerLSN, st.HandedOffLSN = 0x5000, 0x1000 }, false},
		{"new WAL arrives meanwhile: the target stays", func(st *cdc.Status) { st.ServerLSN, st.HandedOffLSN = 0x9000, 0x4FFF }, false},
		{"caught up with the start position", func(st *cdc.Status) { st.HandedOffLSN = 0x5000 }, true},
	}
	for _, step := range steps {
		set(step.set)
		time.Sleep(100 * time.Millisecond) // several polls of awaitCatchUp
		if got := s.started.Load(); got != step.open {
			t.Fatalf("%s: sockets accepted = %v, want %v", step.name, got, step.open)
		}
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("awaitCatchUp did not return once caught up")
	}
}
