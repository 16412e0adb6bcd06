package socketio

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/koordi/koordi-realtime/gateway/engineio"
)

// benchHandler collects the sockets it accepts.
type benchHandler struct{ sockets []*Socket }

func (h *benchHandler) Connect(*Socket, json.RawMessage) (ConnectReply, error) {
	return ConnectReply{}, nil
}
func (h *benchHandler) Connected(s *Socket)                                    { h.sockets = append(h.sockets, s) }
func (h *benchHandler) Event(*Socket, string, []json.RawMessage, func(...any)) {}
func (h *benchHandler) Disconnected(*Socket, string)                           {}

// BenchmarkFanOut encodes one event and queues it to 10,000 sockets (in
// memory: polling sessions driven through ServeHTTP), as a room fan-out
// does. One op is one event to every socket; the frame is encoded once and
// no work or allocation is per recipient (allocs/op stays 1).
func BenchmarkFanOut(b *testing.B) {
	const sockets = 10_000
	s := NewServer(Config{Config: engineio.Config{PingInterval: time.Hour, PingTimeout: time.Hour}})
	h := &benchHandler{}
	s.Handle("/", h)
	var sids []string
	for range sockets {
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, httptest.NewRequest("GET", "/socket.io/?EIO=4&transport=polling", nil))
		var open struct{ SID string }
		if err := json.Unmarshal(rec.Body.Bytes()[1:], &open); err != nil {
			b.Fatal(err)
		}
		s.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("POST", "/socket.io/?EIO=4&transport=polling&sid="+open.SID, strings.NewReader("40")))
		sids = append(sids, open.SID)
	}
	if len(h.sockets) != sockets {
		b.Fatalf("%d sockets connected", len(h.sockets))
	}
	drain := func() { // every client polls once
		for _, sid := range sids {
			s.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/socket.io/?EIO=4&transport=polling&sid="+sid, nil))
		}
	}
	drain()
	payload := json.RawMessage(`{"id":"4f6c1c9e-8d0a-4c37-9a61-0d3f4b1e2a77","title":"Swim practice","assigned_to_user_id":"0b9d7c1e-2f3a-4b5c-8d6e-7f8091a2b3c4"}`)
	const batch = 512
	send := func(i int) {
		off := json.RawMessage(`"000000000169A3F8-0002"`)
		f := EncodeEvent("/", "event:assigned", payload, off)
		for _, sock := range h.sockets {
			if !sock.Send(f) {
				b.Fatal("send refused")
			}
		}
	}
	for i := range 2 * batch { // warm up: queues reach their working size
		send(i)
		if i%batch == batch-1 {
			drain()
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		send(i)
		if i%batch == batch-1 {
			b.StopTimer()
			drain()
			b.StartTimer()
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/sockets, "ns/delivery")
	_ = s.Shutdown(context.Background())
}
