package main

import (
	"strings"
	"testing"
	"time"
)

func TestLatencySteps(t *testing.T) {
	for _, c := range []struct {
		duration, warmup time.Duration
		short            bool
		step, warm       time.Duration
		err              string
	}{
		{step: 10 * time.Second, warm: latencyWarmup},
		{short: true, step: 4 * time.Second, warm: time.Second},
		{duration: 5 * time.Second, step: 5 * time.Second, warm: 2 * time.Second}, // the default, two fifths of a short step
		{duration: 20 * time.Second, step: 20 * time.Second, warm: latencyWarmup},
		{duration: 5 * time.Second, warmup: 3 * time.Second, step: 5 * time.Second, warm: 3 * time.Second},
		{duration: 5 * time.Second, warmup: 5 * time.Second, err: "leaves nothing"},
	} {
		step, warm, err := latencySteps(c.duration, c.warmup, c.short)
		switch {
		case c.err != "":
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%+v: err %v, want %q", c, err, c.err)
			}
		case err != nil || step != c.step || warm != c.warm:
			t.Errorf("%+v: step %s warmup %s err %v", c, step, warm, err)
		}
	}
}

func TestCDCDeliverServer(t *testing.T) {
	for _, c := range []struct{ which, servers, want, err string }{
		{which: "cdc-deliver", servers: "raw,koordi,node", want: "koordi"},
		{which: "cdc-deliver", servers: "koordi@bin/old", want: "koordi@bin/old"},
		{which: "cdc-deliver", servers: "raw", want: "koordi"},
		{which: "cdc-deliver", servers: "koordi,koordi@bin/old", err: "run it once for each"},
		{which: "fanout", servers: "koordi,koordi@bin/old", want: ""},
	} {
		got, err := cdcDeliverServer(c.which, c.servers)
		switch {
		case c.err != "":
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%+v: err %v", c, err)
			}
		case err != nil || got != c.want:
			t.Errorf("%+v: got %q, %v", c, got, err)
		}
	}
}

func TestBacklogServers(t *testing.T) {
	for _, tt := range []struct {
		which, servers string
		ok             bool
	}{
		{"fanout", "raw,gateway,koordi", true},
		{"fanout", "raw,gateway-pg", false},
		{"short", "gateway-pg+GOGC=50", false},
		{"latency", "raw,gateway-pg,koordi", true},
		{"hop", "gateway-pg", true},
	} {
		if err := backlogServers(tt.which, tt.servers); (err == nil) != tt.ok {
			t.Errorf("%s with %s: %v", tt.which, tt.servers, err)
		}
	}
}

func TestCheckPGSettings(t *testing.T) {
	set := []string{"autovacuum=off"}
	for _, tt := range []struct {
		which, url string
		settings   []string
		ok         bool
	}{
		{"latency", "", set, true},
		{"latency", "postgres://elsewhere", set, false},
		{"subjects", "", set, false},
		{"subjects", "", nil, true},
	} {
		if err := checkPGSettings(tt.which, tt.url, tt.settings); (err == nil) != tt.ok {
			t.Errorf("%s, url %q, %v: %v", tt.which, tt.url, tt.settings, err)
		}
	}
}
