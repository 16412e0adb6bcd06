//go:build linux

package engineio

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// poller watches idle WebSocket connections for readability with an epoll
// set of its own, so that a connection waiting for its client holds no
// goroutine: a goroutine blocked in a read keeps a stack of about 8 KiB,
// which was the largest part of what a held connection cost. When a
// connection becomes readable, the poller starts a reader; the reader reads
// what is there and re-arms the registration (EPOLLONESHOT, so one reader
// at a time per connection, and level-triggered, so bytes that arrive while
// it re-arms still report).
//
// Go's own netpoller keeps the descriptors too; both sets watch the same
// socket without interfering. The epoll set and its goroutine exist only
// while connections are registered: the last unregister ends them, which
// also gives the goroutine its exit.
type poller struct {
	start func(func()) // runs a goroutine owned by the Server

	mu  sync.Mutex
	set *epollSet // nil while nothing is registered
}

type epollSet struct {
	fd     int
	wakeFd int // eventfd: the last unregister wakes the wait so it can end
	next   uint64
	regs   map[uint64]*pollReg // by token, under poller.mu
}

// pollReg is one connection's registration.
type pollReg struct {
	p       *poller
	set     *epollSet
	rc      syscall.RawConn
	token   uint64
	onReady func(*pollReg)
}

var (
	errPollUnsupported  = errors.New("connection cannot be polled")
	errPollUnregistered = errors.New("poll registration removed")
)

const pollEvents = unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT

// register adds conn, armed, and runs onReady on a Server goroutine each
// time it is readable after an arm. It fails with errPollUnsupported for
// connections without a descriptor (TLS, pipes): those keep a reader
// goroutine.
func (p *poller) register(conn net.Conn, onReady func(*pollReg)) (*pollReg, error) {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return nil, errPollUnsupported
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil, errPollUnsupported
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	set := p.set
	if set == nil {
		if set, err = newEpollSet(); err != nil {
			return nil, err
		}
	}
	set.next++
	token := set.next
	// Readiness may report before this function returns; the wait loop
	// takes p.mu to look the token up, so it finds the registration.
	var ctlErr error
	if err := rc.Control(func(fd uintptr) {
		ev := unix.EpollEvent{Events: pollEvents}
		setToken(&ev, token)
		ctlErr = unix.EpollCtl(set.fd, unix.EPOLL_CTL_ADD, int(fd), &ev)
	}); err != nil {
		ctlErr = err
	}
	if ctlErr != nil {
		if p.set == nil {
			set.close()
		}
		return nil, fmt.Errorf("epoll add: %w", ctlErr)
	}
	reg := &pollReg{p: p, set: set, rc: rc, token: token, onReady: onReady}
	set.regs[token] = reg
	if p.set == nil {
		p.set = set
		p.start(func() { p.wait(set) })
	}
	return reg, nil
}

func newEpollSet() (*epollSet, error) {
	fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll create: %w", err)
	}
	wakeFd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		_ = unix.Close(fd)
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN}
	setToken(&ev, 0) // token 0 is the wake-up
	if err := unix.EpollCtl(fd, unix.EPOLL_CTL_ADD, wakeFd, &ev); err != nil {
		_ = unix.Close(wakeFd)
		_ = unix.Close(fd)
		return nil, fmt.Errorf("epoll add eventfd: %w", err)
	}
	return &epollSet{fd: fd, wakeFd: wakeFd, regs: make(map[uint64]*pollReg)}, nil
}

func (s *epollSet) close() {
	_ = unix.Close(s.wakeFd)
	_ = unix.Close(s.fd)
}

// wait dispatches readiness until set has no registration left.
func (p *poller) wait(set *epollSet) {
	events := make([]unix.EpollEvent, 256)
	var run []*pollReg
	for {
		n, err := unix.EpollWait(set.fd, events, -1)
		if err != nil && !errors.Is(err, unix.EINTR) {
			// Only a broken set (EBADF, EINVAL) fails here: an invariant,
			// not a condition to live with.
			panic(fmt.Sprintf("engineio: epoll wait: %v", err))
		}
		run = run[:0]
		p.mu.Lock()
		for _, ev := range events[:max(n, 0)] {
			t := token(&ev)
			if t == 0 {
				var count [8]byte
				_, _ = unix.Read(set.wakeFd, count[:]) // level-triggered: drain it
				continue
			}
			// A token missing here was unregistered after it reported.
			if reg, ok := set.regs[t]; ok {
				run = append(run, reg)
			}
		}
		last := len(set.regs) == 0
		if last {
			p.set = nil
		}
		p.mu.Unlock()
		if last {
			set.close()
			return
		}
		for _, reg := range run {
			p.start(func() { reg.onReady(reg) })
		}
		clear(run)
	}
}

// arm asks for the next readiness. It fails once the connection is closed.
//
// It holds p.mu, as the wait loop does to dispatch: the reader that arms
// and the reader the readiness starts then share a lock, which the race
// detector sees, where the kernel's ordering of epoll_ctl before the event
// would be invisible to it.
func (r *pollReg) arm() error {
	r.p.mu.Lock()
	defer r.p.mu.Unlock()
	// Once unregistered, the set may be gone and its descriptor number
	// reused: touch nothing.
	if r.set.regs[r.token] != r {
		return errPollUnregistered
	}
	var ctlErr error
	if err := r.rc.Control(func(fd uintptr) {
		ev := unix.EpollEvent{Events: pollEvents}
		setToken(&ev, r.token)
		ctlErr = unix.EpollCtl(r.set.fd, unix.EPOLL_CTL_MOD, int(fd), &ev)
	}); err != nil {
		return err
	}
	return ctlErr
}

// unregister removes the registration; idempotent. The last one ends the
// set's goroutine.
func (r *pollReg) unregister() {
	r.p.mu.Lock()
	defer r.p.mu.Unlock()
	if _, ok := r.set.regs[r.token]; !ok {
		return
	}
	delete(r.set.regs, r.token)
	// A closed descriptor has already left the set; an open one must leave
	// it now, so that its number, once reused, cannot report here.
	_ = r.rc.Control(func(fd uintptr) {
		_ = unix.EpollCtl(r.set.fd, unix.EPOLL_CTL_DEL, int(fd), nil)
	})
	if len(r.set.regs) == 0 {
		one := [8]byte{1} // any non-zero count wakes the wait
		_, _ = unix.Write(r.set.wakeFd, one[:])
	}
}

// The token travels in the event's data (Fd and Pad: 8 bytes).
func setToken(ev *unix.EpollEvent, t uint64) {
	ev.Fd = int32(t)
	ev.Pad = int32(t >> 32)
}

func token(ev *unix.EpollEvent) uint64 {
	return uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
}
