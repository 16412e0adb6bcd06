package inspector

import (
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"slices"
	"strings"
	"time"
)

// EventTest is the name of the test events the page sends in dev
// (Config.Emit).
const EventTest = "inspector:test"

// RoomsReply is the answer of /inspector/api/rooms.
type RoomsReply struct {
	User  string   `json:"user"`
	Rooms []string `json:"rooms"`
}

type apiError struct {
	Error string `json:"error"`
}

func writeError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(apiError{msg})
}

// bearer is the token of an Authorization: Bearer header. Only a header
// carries it (never a cookie or the URL), so another site's page cannot
// make a browser send one, and it stays out of access logs.
func bearer(r *http.Request) string {
	scheme, tok, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return ""
	}
	return strings.TrimSpace(tok)
}

// viewer verifies the request's token; false: the answer has been written.
func (h *handler) viewer(w http.ResponseWriter, r *http.Request) (RoomsReply, bool) {
	if h.cfg.Rooms == nil {
		http.NotFound(w, r)
		return RoomsReply{}, false
	}
	tok := bearer(r)
	if tok == "" {
		writeError(w, http.StatusUnauthorized, "Authorization: Bearer <token> required")
		return RoomsReply{}, false
	}
	user, rooms, err := h.cfg.Rooms(tok)
	if err != nil {
		writeError(w, http.StatusUnauthorized, err.Error())
		return RoomsReply{}, false
	}
	return RoomsReply{User: user, Rooms: nonNil(rooms)}, true
}

func (h *handler) rooms(w http.ResponseWriter, r *http.Request) {
	if v, ok := h.viewer(w, r); ok {
		writeJSON(w, v)
	}
}

// emitRequest is the body of /inspector/api/emit.
type emitRequest struct {
	Room string `json:"room"`
}

// testEvent is the payload of a test event.
type testEvent struct {
	Message string `json:"message"`
	Room    string `json:"room"`
	By      string `json:"by"`
	SentAt  string `json:"sent_at"`
}

func (h *handler) emit(w http.ResponseWriter, r *http.Request) {
	if h.cfg.Emit == nil {
		http.NotFound(w, r)
		return
	}
	// JSON only: a form another site posts cannot be, without a CORS
	// preflight this server never grants.
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/json" {
		writeError(w, http.StatusUnsupportedMediaType, "Content-Type: application/json required")
		return
	}
	v, ok := h.viewer(w, r)
	if !ok {
		return
	}
	var req emitRequest
	body, err := io.ReadAll(io.LimitReader(r.Body, 4<<10))
	if err == nil {
		err = json.Unmarshal(body, &req)
	}
	if err != nil || req.Room == "" {
		writeError(w, http.StatusBadRequest, `want {"room": "<one of your rooms>"}`)
		return
	}
	if !slices.Contains(v.Rooms, req.Room) {
		writeError(w, http.StatusForbidden, "not one of this token's rooms: "+req.Room)
		return
	}
	data, _ := json.Marshal(testEvent{
		Message: "test event from the inspector", Room: req.Room, By: v.User,
		SentAt: time.Now().UTC().Format(time.RFC3339Nano),
	})
	if err := h.cfg.Emit(r.Context(), req.Room, EventTest, data); err != nil {
		if errors.Is(err, r.Context().Err()) {
			return
		}
		h.cfg.Logger.Warn("inspector: emit a test event", "room", req.Room, "err", err)
		writeError(w, http.StatusBadGateway, "emit failed: "+err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusAccepted)
	_ = json.NewEncoder(w).Encode(map[string]any{"ok": true, "room": req.Room, "event": EventTest})
}
