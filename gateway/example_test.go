package gateway_test

import (
	"context"
	"log"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/koordi/koordi-realtime/gateway"
	"github.com/koordi/koordi-realtime/schema"
)

// The gateway standalone: the Socket.IO endpoint on /socket.io/, memberships
// from a snapshot, and transactions published in commit order, their room
// moves with them.
func Example() {
	const (
		alex   = "6f1c2b7e-3a4d-4e5f-8a9b-0c1d2e3f4a5b"
		soccer = "0b9a8c7d-6e5f-4a3b-8c2d-1e0f9a8b7c6d"
	)
	ctx := context.Background()
	cfg := gateway.Config{
		JWTSecret:    []byte("a-secret-of-at-least-32-bytes-0123456789"),
		ReplayWindow: 2 * time.Minute,
		RateLimit:    100,
		Registerer:   prometheus.NewRegistry(),
	}
	cfg.AllowedOrigins = []string{"http://localhost:5173"} // the protocol layer's settings are embedded
	g, err := gateway.New(cfg)
	if err != nil {
		log.Fatal(err)
	}
	// Memberships as of a database snapshot (cdc.ReadMemberships reads one
	// with its transaction visibility); Publish brings them forward.
	g.LoadMemberships(&schema.MembershipSnapshot{})
	mux := http.NewServeMux()
	mux.Handle("/socket.io/", g.Handler())
	go func() { _ = http.ListenAndServe("127.0.0.1:3000", mux) }()

	// From the replication stream, one committed transaction at a time: Alex
	// becomes a member of Soccer, so her sockets join its room just before
	// member:added, which they receive.
	const lsn = 0x169A3F8
	room := schema.CalendarRoom(soccer)
	_ = g.Publish(ctx, schema.Transaction{
		CommitLSN:  lsn,
		CommitTime: time.Now(),
		Events: []schema.Envelope{{
			Offset: schema.Offset{LSN: lsn},
			Room:   room,
			Event:  schema.MemberAdded,
			Data:   []byte(`{"calendar_id":"` + soccer + `","user_id":"` + alex + `","user_email":"alex@example.com","user_name":"Alex"}`),
		}},
		Moves: []schema.Move{{At: 0, Op: schema.MoveJoin, User: alex, Room: room}},
	})
	_ = g.Shutdown(ctx)
}
