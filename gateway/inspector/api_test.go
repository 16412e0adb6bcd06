package inspector

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func request(t *testing.T, h http.Handler, method, path, token, contentType, body string) (int, string) {
	t.Helper()
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	b, _ := io.ReadAll(rec.Result().Body)
	return rec.Code, strings.TrimSpace(string(b))
}

// fakeRooms accepts the token "alex" only.
func fakeRooms(token string) (string, []string, error) {
	if token != "alex" {
		return "", nil, errors.New("Authentication error: invalid token")
	}
	return "u-alex", []string{"user:u-alex", "calendar:c-school"}, nil
}

// TestRoomsEndpoint: the rooms of a verified token's user, and nothing
// without one; 404 where the service gives no Rooms.
func TestRoomsEndpoint(t *testing.T) {
	h := New(Config{Rooms: fakeRooms})
	if code, _ := request(t, h, "GET", "/inspector/api/rooms", "", "", ""); code != 401 {
		t.Errorf("no token: %d", code)
	}
	if code, body := request(t, h, "GET", "/inspector/api/rooms", "sam", "", ""); code != 401 || strings.Contains(body, "calendar:") {
		t.Errorf("refused token: %d %s", code, body)
	}
	code, body := request(t, h, "GET", "/inspector/api/rooms", "alex", "", "")
	var got RoomsReply
	if err := json.Unmarshal([]byte(body), &got); err != nil || code != 200 || got.User != "u-alex" || len(got.Rooms) != 2 {
		t.Errorf("alex: %d %s", code, body)
	}
	if code, _ := request(t, New(Config{}), "GET", "/inspector/api/rooms", "alex", "", ""); code != 404 {
		t.Errorf("without Rooms: %d, want 404", code)
	}
}

// TestEmitEndpoint: a test event only to one of the token's rooms, as JSON,
// and only where Emit is set (dev).
func TestEmitEndpoint(t *testing.T) {
	var sent []string
	emit := func(_ context.Context, room, event string, data []byte) error {
		var d testEvent
		if err := json.Unmarshal(data, &d); err != nil || d.Room != room || d.By != "u-alex" {
			t.Errorf("payload %s", data)
		}
		sent = append(sent, room+" "+event)
		return nil
	}
	h := New(Config{Rooms: fakeRooms, Emit: emit})
	for _, tc := range []struct {
		token, ctype, body string
		code               int
	}{
		{"alex", "application/json", `{"room":"calendar:c-school"}`, 202},
		{"alex", "application/json; charset=utf-8", `{"room":"user:u-alex"}`, 202},
		{"alex", "application/json", `{"room":"calendar:c-other"}`, 403},
		{"alex", "application/json", `{"room":""}`, 400},
		{"alex", "application/json", `not json`, 400},
		{"alex", "text/plain", `{"room":"calendar:c-school"}`, 415},
		{"alex", "application/x-www-form-urlencoded", `room=calendar:c-school`, 415},
		{"", "application/json", `{"room":"calendar:c-school"}`, 401},
		{"sam", "application/json", `{"room":"calendar:c-school"}`, 401},
	} {
		if code, body := request(t, h, "POST", "/inspector/api/emit", tc.token, tc.ctype, tc.body); code != tc.code {
			t.Errorf("%s %s %s: %d %s, want %d", tc.token, tc.ctype, tc.body, code, body, tc.code)
		}
	}
	if len(sent) != 2 || sent[0] != "calendar:c-school "+EventTest {
		t.Errorf("sent %v", sent)
	}
	if code, _ := request(t, h, "GET", "/inspector/api/emit", "alex", "", ""); code != 404 {
		t.Errorf("GET emit: %d, want 404 (POST only)", code)
	}
	if code, _ := request(t, New(Config{Rooms: fakeRooms}), "POST", "/inspector/api/emit", "alex", "application/json", `{"room":"user:u-alex"}`); code != 404 {
		t.Errorf("serve (no Emit): %d, want 404", code)
	}
	var cfg pageConfig
	_, body := request(t, h, "GET", "/inspector/api/config", "", "", "")
	if err := json.Unmarshal([]byte(body), &cfg); err != nil || !cfg.Emit || !cfg.Rooms {
		t.Errorf("config %s", body)
	}
}
