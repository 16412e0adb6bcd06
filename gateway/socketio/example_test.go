package socketio_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"

	"github.com/koordi/koordi-realtime/gateway/engineio"
	"github.com/koordi/koordi-realtime/gateway/socketio"
)

// room is a minimal handler: it refuses clients without a token and keeps
// the others in one set for broadcasts.
type room struct {
	mu      sync.Mutex
	members map[*socketio.Socket]bool
}

func (r *room) Connect(s *socketio.Socket, auth json.RawMessage) (socketio.ConnectReply, error) {
	var a struct{ Token string }
	if json.Unmarshal(auth, &a) != nil || a.Token == "" {
		return socketio.ConnectReply{}, errors.New("Authentication error: token required")
	}
	return socketio.ConnectReply{}, nil
}

func (r *room) Connected(s *socketio.Socket) {
	r.mu.Lock()
	r.members[s] = true
	r.mu.Unlock()
}

func (r *room) Event(s *socketio.Socket, event string, args []json.RawMessage, ack func(args ...any)) {
	if ack != nil {
		ack("ok")
	}
}

func (r *room) Disconnected(s *socketio.Socket, reason string) {
	r.mu.Lock()
	delete(r.members, s)
	r.mu.Unlock()
}

// broadcast encodes the event once and queues the same bytes to every
// member; Send never blocks, and a member too slow to keep up is
// disconnected by the server rather than delaying the others.
func (r *room) broadcast(event string, payload json.RawMessage) (sent int) {
	f := socketio.EncodeEvent("/", event, payload)
	r.mu.Lock()
	defer r.mu.Unlock()
	for s := range r.members {
		if s.Send(f) {
			sent++
		}
	}
	return sent
}

func Example() {
	srv := socketio.NewServer(socketio.Config{Config: engineio.Config{AllowedOrigins: []string{"http://localhost:5173"}}})
	r := &room{members: make(map[*socketio.Socket]bool)}
	srv.Handle("/", r)
	mux := http.NewServeMux()
	mux.Handle("/socket.io/", srv)
	// … serve mux; later r.broadcast("calendar:synced", payload) …
	_ = r.broadcast

	fmt.Printf("%s\n", socketio.EncodeEvent("/", "calendar:synced", json.RawMessage(`{"calendar_id":"c1"}`), json.RawMessage(`"0000000000000001-0000"`)))
	// Output: 42["calendar:synced",{"calendar_id":"c1"},"0000000000000001-0000"]
}
