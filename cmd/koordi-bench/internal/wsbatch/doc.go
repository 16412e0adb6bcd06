// Package wsbatch is evidence for a proposed gateway optimisation, not part
// of the load generator: its benchmark compares sending a batch of small
// WebSocket frames the way gateway/engineio does today (one
// coder/websocket Conn.Write, hence one flush and one write(2), per frame)
// with writing the same frames to the connection in one write(2).
//
// AppendFrame is the unmasked server-to-client text frame encoder such a
// writer needs (RFC 6455 §5.2).
package wsbatch
