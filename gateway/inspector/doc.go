// Package inspector serves the inspector page: a browser tool that connects
// to the gateway with the real socket.io-client, as Koordi's front end does,
// and shows live what a user receives (connection state and transport,
// rooms, each event with its offset and payload) next to the service's own
// numbers (connected sockets, events per second, replication lag).
//
// Everything is embedded in the binary (go:embed). socket.io-client's browser
// bundle is third-party code and never committed: `make inspector-bundle`
// copies it from testdata/node_modules into static/vendor before building.
// A binary built without it still serves the page, which then says how to
// get the bundle ([BundleEmbedded] reports which).
//
// The page reads the service's numbers over HTTP, from a JSON summary of a
// prometheus.Gatherer (the same registry /metrics exposes), so the inspector
// knows nothing of the consumer or the gateway's internals and shows exactly
// what an operator's dashboards would.
//
// What only the service knows it asks for with the socket's own token
// (Authorization: Bearer, never a cookie): the rooms that token's socket is
// in ([Config.Rooms], /inspector/api/rooms), so a pasted token's calendars
// show; and, in dev only, a test event to one of those rooms through
// koordi_realtime.emit ([Config.Emit], POST /inspector/api/emit).
//
// Demo users and their tokens ([Config.DemoUsers]) are for `koordi-realtime
// dev` only: whoever can load the page can use them.
//
// A Handler is immutable after New and safe for concurrent use.
package inspector
