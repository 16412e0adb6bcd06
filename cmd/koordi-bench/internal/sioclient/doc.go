// Package sioclient is the load generator's Socket.IO v5 / Engine.IO v4
// client over WebSocket (github.com/coder/websocket): just what a Koordi
// browser does — connect to namespace "/" with auth.token, answer pings,
// receive EVENT packets — built to be cheap per message, so the load
// generator is not what a benchmark measures.
//
// The codec (codec.go) parses frames in place without allocating: an event's
// name and its raw JSON arguments are sub-slices of the frame.
//
// Concurrency: a [Conn] is owned by one goroutine, which calls [Conn.Run];
// [Conn.Close] may be called from any goroutine and makes Run return.
// Run calls the handler on its own goroutine with a frame buffer that is
// reused for the next frame: the handler must not keep it.
package sioclient
