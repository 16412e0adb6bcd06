//go:build !linux

package engineio

import (
	"errors"
	"net"
)

// poller is Linux-only (epoll); elsewhere every WebSocket connection keeps
// a reader goroutine.
type poller struct {
	start func(func())
}

type pollReg struct{}

var errPollUnsupported = errors.New("connection cannot be polled")

func (p *poller) register(net.Conn, func(*pollReg)) (*pollReg, error) {
	return nil, errPollUnsupported
}

func (r *pollReg) arm() error  { return errPollUnsupported }
func (r *pollReg) unregister() {}
