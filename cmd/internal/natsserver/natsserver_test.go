package natsserver

import (
	"context"
	"os"
	"strings"
	"testing"
)

// TestVersionIsGoMod: the version this package names is the one go.mod pins.
func TestVersionIsGoMod(t *testing.T) {
	b, err := os.ReadFile("../../../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "github.com/nats-io/nats-server/v2 "+Version) {
		t.Fatalf("go.mod does not pin nats-server %s", Version)
	}
}

func TestStartKillRestart(t *testing.T) {
	s, err := Start(context.Background(), Config{})
	if err != nil {
		if os.Getenv("CI") == "" {
			t.Skip(err)
		}
		t.Fatal(err)
	}
	defer s.Stop()
	pid := s.PID()
	if pid == 0 {
		t.Fatal("no PID")
	}
	if _, err := os.Stat(s.StoreDir()); err != nil {
		t.Fatal(err)
	}
	s.Kill()
	if err := s.Restart(context.Background()); err != nil {
		t.Fatal(err)
	}
	if p := s.PID(); p == 0 || p == pid {
		t.Fatalf("PID after restart %d, before %d", p, pid)
	}
}
