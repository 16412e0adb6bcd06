package service

import "testing"

func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"nats://127.0.0.1:4222":                       "nats://127.0.0.1:4222",
		"nats://user:secret@a:4222,nats://tok@b:4222": "nats://redacted@a:4222,nats://redacted@b:4222",
		"nats://user:secret@a:4222, nats://c:4222":    "nats://redacted@a:4222, nats://c:4222",
	} {
		if got := redactURL(in); got != want {
			t.Errorf("redactURL(%q) = %q, want %q", in, got, want)
		}
	}
}
