package main

import (
	"context"
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestHelpListsEveryFlag: every command's --help exits 0 and lists each flag
// with its environment variable (or "-") and default; serve's covers every
// variable of the README's configuration table.
func TestHelpListsEveryFlag(t *testing.T) {
	entry := regexp.MustCompile(`^  --(\S+)\s+(\S+)\s+default (.+)$`)
	for _, c := range commands() {
		if c.name == "version" {
			continue
		}
		var stdout, stderr syncBuffer
		if code := run(context.Background(), envOf(nil, &stdout, &stderr), []string{c.name, "--help"}); code != 0 {
			t.Errorf("%s --help: exit %d", c.name, code)
			continue
		}
		help := stderr.String()
		envs := map[string]bool{}
		n := 0
		for _, line := range strings.Split(help, "\n") {
			if strings.HasPrefix(line, "  --") {
				m := entry.FindStringSubmatch(line)
				if m == nil {
					t.Errorf("%s --help: malformed flag line %q", c.name, line)
					continue
				}
				envs[m[2]] = true
				n++
			}
		}
		if n == 0 {
			t.Errorf("%s --help lists no flags:\n%s", c.name, help)
		}
		if strings.Count(help, "usage: koordi-realtime "+c.name) != 1 {
			t.Errorf("%s --help: usage printed %d times", c.name, strings.Count(help, "usage:"))
		}
		want := map[string][]string{
			"serve": {"DATABASE_URL", "JWT_SECRET", "JWT_PUBLIC_KEY_FILE", "LISTEN_ADDR", "FRONTEND_URL", "SLOT_NAME",
				"PUBLICATION_NAME", "REPLAY_WINDOW", "NATS_URL", "LOG_FORMAT", "LOG_LEVEL", "INSPECTOR"},
			"dev":     {"DATABASE_URL", "JWT_SECRET", "LISTEN_ADDR", "SLOT_NAME", "LOG_FORMAT", "KOORDI_DEV_DIR", "SIMULATE"},
			"tail":    {"DATABASE_URL", "TAIL_SLOT_NAME", "TAIL_STATUS_INTERVAL", "PUBLICATION_NAME", "LOG_FORMAT"},
			"setup":   {"DATABASE_URL", "PUBLICATION_NAME", "LOG_FORMAT"},
			"migrate": {"DATABASE_URL", "LOG_FORMAT"},
		}[c.name]
		for _, v := range want {
			if !envs[v] {
				t.Errorf("%s --help does not list %s", c.name, v)
			}
		}
	}
}

// TestConfigErrorsAreOneLine: everything a user can fix ends in exit 2 and
// exactly one line on stderr, never a stack trace.
func TestConfigErrorsAreOneLine(t *testing.T) {
	secret := "0123456789abcdef0123456789abcdef"
	unreachable := "postgres://nobody@127.0.0.1:1/koordi?connect_timeout=2"
	for _, tc := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"nope"}, nil, "unknown command"},
		{[]string{"serve"}, nil, "DATABASE_URL is not set"},
		{[]string{"serve"}, nil, "JWT_SECRET is not set"}, // every missing setting at once
		{[]string{"serve", "--bogus"}, nil, "unknown flag --bogus"},
		{[]string{"serve", "--rate-limit"}, nil, "needs an argument: --rate-limit"},
		{[]string{"serve", "--inspector=maybe"}, nil, "for --inspector"},
		{[]string{"serve", "--rate-limit", "x"}, map[string]string{"DATABASE_URL": unreachable, "JWT_SECRET": secret}, "for flag --rate-limit"},
		{[]string{"serve"}, map[string]string{"DATABASE_URL": unreachable, "JWT_SECRET": secret, "RATE_LIMIT": "-1"}, "RATE_LIMIT=-1 must not be negative"},
		{[]string{"serve"}, map[string]string{"DATABASE_URL": unreachable, "JWT_SECRET": secret, "IDLE_MEMORY_RELEASE": "-1s"}, "IDLE_MEMORY_RELEASE must not be negative (0: never)"},
		{[]string{"serve"}, map[string]string{"DATABASE_URL": unreachable, "JWT_SECRET": secret, "FRONTEND_URL": "https://app.koordi.example/calendar"}, "is not an origin"},
		{[]string{"serve"}, map[string]string{"DATABASE_URL": unreachable, "JWT_SECRET": secret, "FRONTEND_URL": "http://localhost:5173,localhost:5173"}, `"localhost:5173" is not an origin`},
		{[]string{"serve"}, map[string]string{"DATABASE_URL": unreachable, "JWT_SECRET": secret, "MAX_CONNECTIONS": "-5"}, "MAX_CONNECTIONS"},
		{[]string{"serve"}, map[string]string{"DATABASE_URL": unreachable, "JWT_SECRET": secret, "LISTEN_ADDR": "3000"}, "LISTEN_ADDR"},
		{[]string{"serve"}, map[string]string{"DATABASE_URL": unreachable, "JWT_SECRET": secret, "SLOT_NAME": "Bad-Slot"}, "SLOT_NAME"},
		{[]string{"serve", "stray"}, map[string]string{"DATABASE_URL": unreachable}, "unexpected argument"},
		{[]string{"serve"}, map[string]string{"DATABASE_URL": unreachable}, "JWT_SECRET is not set"},
		{[]string{"serve"}, map[string]string{"DATABASE_URL": unreachable, "JWT_SECRET": "short"}, "at least 32"},
		{[]string{"serve"}, map[string]string{"DATABASE_URL": unreachable, "JWT_SECRET": secret, "REPLAY_WINDOW": "soon"}, "not a duration"},
		{[]string{"serve"}, map[string]string{"DATABASE_URL": unreachable, "JWT_SECRET": secret, "RATE_LIMIT": "many"}, "not an integer"},
		{[]string{"serve"}, map[string]string{"DATABASE_URL": unreachable, "JWT_SECRET": secret, "RATE_LIMIT": "10x"}, "not an integer"},
		{[]string{"serve", "--rate-limit", "1e3"}, map[string]string{"DATABASE_URL": unreachable, "JWT_SECRET": secret}, "not an integer"},
		{[]string{"serve"}, map[string]string{"DATABASE_URL": unreachable, "JWT_SECRET": secret, "LOG_FORMAT": "xml"}, "want text or json"},
		{[]string{"serve"}, map[string]string{"DATABASE_URL": unreachable, "JWT_PUBLIC_KEY_FILE": "/nonexistent.pem", "NATS_URL": "nats://x"}, "RECOVERY_SECRET is not set"},
		{[]string{"serve"}, map[string]string{"DATABASE_URL": unreachable, "JWT_SECRET": secret, "RECOVERY_SECRET": "short"}, "RECOVERY_SECRET is 5 bytes"},
		{[]string{"dev", "--nodes", "0"}, nil, "DEV_NODES=0"},
		{[]string{"dev", "--nodes", "3"}, map[string]string{"LISTEN_ADDR": "127.0.0.1:0"}, "needs a fixed port"},
		{[]string{"serve"}, map[string]string{"DATABASE_URL": unreachable, "JWT_SECRET": secret, "LISTEN_ADDR": "127.0.0.1:0"}, "cannot connect"},
		{[]string{"migrate"}, map[string]string{"DATABASE_URL": unreachable}, "cannot connect"},
		{[]string{"tail"}, map[string]string{"TAIL_STATUS_INTERVAL": "-1s"}, "DATABASE_URL is not set (flag --database-url); TAIL_STATUS_INTERVAL must not be negative"},
		{[]string{"setup"}, map[string]string{"DATABASE_URL": "not a url"}, "DATABASE_URL"},
		{[]string{"dev", "--token-ttl", "-1s"}, nil, "TOKEN_TTL"},
		{[]string{"dev"}, map[string]string{"LOG_FORMAT": "xml"}, "want text or json"},
		{[]string{"dev"}, map[string]string{"LISTEN_ADDR": "256.0.0.1:0", "KOORDI_DEV_DIR": t.TempDir()}, "listen on"},
		{[]string{"dev"}, map[string]string{"LISTEN_ADDR": "127.0.0.1:0", "JWT_SECRET": "short"}, "at least 32"},
		{[]string{"dev"}, map[string]string{"LISTEN_ADDR": "127.0.0.1:0", "KOORDI_DEV_DIR": "/proc/self/nope"}, "/proc/self/nope"},
		{[]string{"token"}, nil, "JWT_SECRET is not set"},
		{[]string{"token", "--user-id", "u"}, map[string]string{"JWT_SECRET": "short"}, "JWT_SECRET"},
	} {
		var stdout, stderr syncBuffer
		code := run(context.Background(), envOf(tc.env, &stdout, &stderr), tc.args)
		out := stderr.String()
		// Nothing is logged before the error: every setting and the
		// database are checked before anything starts or listens.
		lines := strings.Split(strings.TrimSpace(out), "\n")
		// The command is named once: "koordi-realtime setup: setup: …" says
		// nothing the first prefix did not.
		doubled := strings.Contains(lines[0], "koordi-realtime "+tc.args[0]+": "+tc.args[0]+":")
		if code != 2 || len(lines) != 1 || !strings.Contains(lines[0], tc.want) || strings.Contains(out, "goroutine ") || doubled {
			t.Errorf("%v %v: exit %d, stderr:\n%s\nwant exit 2 and one line containing %q", tc.args, tc.env, code, out, tc.want)
		}
	}
}

// TestVersionFlags: --version and -version print what `version` does.
func TestVersionFlags(t *testing.T) {
	for _, args := range [][]string{{"version"}, {"--version"}, {"-version"}} {
		var stdout, stderr syncBuffer
		if code := run(context.Background(), envOf(nil, &stdout, &stderr), args); code != 0 || stdout.String() != "koordi-realtime "+version+"\n" {
			t.Errorf("%v: exit %d, stdout %q, stderr %q", args, code, stdout.String(), stderr.String())
		}
	}
}

// TestFinalErrorIsJSON: under LOG_FORMAT=json (environment or flag) the one
// line of a failed command is a JSON record like the log's, so a collector
// that reads stderr as JSON does not drop it.
func TestFinalErrorIsJSON(t *testing.T) {
	unreachable := "postgres://nobody@127.0.0.1:1/koordi?connect_timeout=2"
	for _, tc := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"serve"}, map[string]string{"LOG_FORMAT": "json"}, "DATABASE_URL is not set"},
		{[]string{"serve", "--log-format", "json", "--bogus"}, nil, "unknown flag --bogus"},
		{[]string{"serve"}, map[string]string{"LOG_FORMAT": "json", "DATABASE_URL": unreachable, "JWT_SECRET": testSecret, "LISTEN_ADDR": "127.0.0.1:0"}, "cannot connect"},
		{[]string{"migrate", "--log-format=json"}, map[string]string{"DATABASE_URL": unreachable}, "cannot connect"},
	} {
		var stdout, stderr syncBuffer
		code := run(context.Background(), envOf(tc.env, &stdout, &stderr), tc.args)
		out := strings.TrimSpace(stderr.String())
		var rec struct {
			Level, Msg string
			Exit       int `json:"exit_status"`
		}
		if code != 2 || strings.Contains(out, "\n") || json.Unmarshal([]byte(out), &rec) != nil ||
			rec.Level != "ERROR" || rec.Exit != 2 || !strings.Contains(rec.Msg, tc.want) {
			t.Errorf("%v %v: exit %d, stderr:\n%s\nwant exit 2 and one JSON record whose msg contains %q", tc.args, tc.env, code, out, tc.want)
		}
	}
}

// TestCheckOrigin: FRONTEND_URL entries are what browsers send as Origin.
func TestCheckOrigin(t *testing.T) {
	for o, ok := range map[string]bool{
		"http://localhost:5173": true, "https://app.koordi.example": true, "https://app.koordi.example/": true,
		"*": true, "http://[::1]:8080": true,
		"localhost:5173": false, "app.koordi.example": false, "https://app.koordi.example/calendar": false,
		"https://user@app.koordi.example": false, "https://app.koordi.example?x=1": false, "https://app.koordi.example#f": false,
		"http://": false, "http://localhost:99999": false, "/relative": false,
	} {
		if err := checkOrigin(o); (err == nil) != ok {
			t.Errorf("checkOrigin(%q) = %v, want ok %v", o, err, ok)
		}
	}
}

// TestIdleReleaseZeroIsNever: IDLE_MEMORY_RELEASE=0 turns the release off,
// where service.Config's 0 is its default.
func TestIdleReleaseZeroIsNever(t *testing.T) {
	if got := idleRelease(0); got >= 0 {
		t.Errorf("idleRelease(0) = %v, want a negative duration (never)", got)
	}
	if got := idleRelease(3 * time.Second); got != 3*time.Second {
		t.Errorf("idleRelease(3s) = %v", got)
	}
}
