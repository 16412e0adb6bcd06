// Package socketio serves Socket.IO v5 over Engine.IO v4 (package
// [github.com/koordi/koordi-realtime/gateway/engineio]): the packet codec,
// namespaces, CONNECT/CONNECT_ERROR, EVENT and ACK (binary variants
// included), DISCONNECT and the connect timeout. It knows nothing of JWTs,
// rooms or Koordi: a [Handler] per namespace decides.
//
// # Configuration
//
// [Config] embeds [engineio.Config]: the Engine.IO settings (heartbeat,
// MaxPayload, origins, SendQueue, Logger) reach the engine as given, with
// engineio's defaults, and this layer's own defaults follow them
// (MaxAttachmentBytes from MaxPayload, AttachmentTimeout from PingTimeout).
// [Server.Config] reports the values in effect.
//
// # Sending
//
// A [Frame] is one encoded Engine.IO packet. [EncodeEvent] builds it once;
// [Socket.Send] queues the same bytes on any number of sockets without
// copying or allocating. Sending never blocks: each engine connection has a
// bounded queue (Config.SendQueue) and a socket whose queue is full has its
// connection closed ("slow consumer"); the client reconnects. Frames go out
// in Send order per connection, across the polling→WebSocket upgrade.
//
// # Handler calls
//
// For one engine connection, Connect, Connected, Event, BinaryEvent and
// Disconnected never run concurrently: they run in packet order on the
// connection's read goroutine (WebSocket reader or polling POST), except
// Disconnected after [Socket.Disconnect], which runs on a short goroutine
// serialised with the others. Disconnected runs exactly once per socket
// whose Connect succeeded, after its last Event. A handler may block only
// briefly: it holds up that connection's reading, not others'.
//
// Unknown namespaces are refused with CONNECT_ERROR {"message":"Invalid
// namespace"}, unless [Server.HandleOthers] gave them a handler (the gateway
// uses one to count such CONNECTs against the connection's rate budget).
// A handler refusing with a [*ConnectRefusal] adds "data" to the
// CONNECT_ERROR, and may have the connection closed after it. A malformed packet, or an attachment out of place, closes the
// engine connection ("parse error"), as the reference server does. Client
// ACK packets are ignored: the server asks for no acks.
//
// # Binary attachments
//
// What a client can make the server hold is bounded. A binary packet
// (BINARY_EVENT, BINARY_ACK) before the connection has a namespace socket
// closes it as a parse error at once, buffering nothing: it could not be
// delivered, and its attachments would otherwise wait for the connect
// timeout. Afterwards the attachments of an incomplete packet hold at most
// Config.MaxAttachmentBytes per connection (default MaxPayload) for at
// most Config.AttachmentTimeout (default PingTimeout); past either the
// connection closes ("parse error"). Those of a packet for a namespace not
// joined are counted, not kept (the packet is ignored, as by the reference
// server). [Server.PendingAttachmentBytes] reports what all connections
// hold. A packet announces at most [MaxAttachments].
//
// # Logs
//
// Log lines name a connection by its engine sid_hash ([engineio.SIDHash]),
// never by the engine sid (a credential) or the socket id.
//
// # Lock order
//
// engineio's per-connection read lock (held during Handler calls) before
// client.mu (the namespace table of one connection, and the value of
// [Socket.SetConnValue]). Socket methods take no lock the Handler could
// hold.
package socketio
