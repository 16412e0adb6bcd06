//go:build linux

package raw

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Socket states.
const (
	stHTTP  = iota // reading the request head
	stWS           // upgraded, waiting for the Socket.IO CONNECT
	stReady        // connected; receives the schedule's frames
)

// sock is one client connection, owned by one worker.
type sock struct {
	fd      int
	state   uint8
	closed  bool
	blocked bool // the last write was short: wait for EPOLLOUT
	queued  bool // in the worker's batch
	user    int
	idx     int    // position in worker.ready
	in      []byte // handshake bytes not yet consumed
	out     []byte // frames copied for this socket (rate plans)
	outOff  int
	ext     []byte // the room's frames still to write (fan-out), shared
	extOff  int
}

// job is one Plan as the workers run it.
type job struct {
	plan  Plan
	start time.Time
	fan   [][]byte // fan-out: each calendar's frames, read-only
	done  chan workerResult
}

type workerResult struct {
	sockets int
	behind  time.Duration
	end     time.Time
}

// worker is one thread's epoll set, listener and sockets.
type worker struct {
	id      int
	epfd    int
	lfd     int
	evfd    int
	socks   []*sock // by descriptor
	ready   []*sock
	nReady  atomic.Int64
	nextSID uint64
	events  []unix.EpollEvent
	rbuf    []byte
	batch   []*sock
	frame   []byte

	mu    sync.Mutex
	inbox *job
	stop  bool

	// The running job, owned by the loop.
	job     *job
	rooms   [][]*sock
	sockets int
	next    int64 // next commit of a rate plan
	pending int   // fan-out: sockets with frames left
	behind  time.Duration
}

type pool struct {
	workers []*worker
	wg      sync.WaitGroup
	runMu   sync.Mutex
}

var noPwait2 atomic.Bool

func startPool(cfg Config) (*pool, error) {
	addr, err := net.ResolveTCPAddr("tcp4", cfg.Listen)
	if err != nil {
		return nil, err
	}
	ip4 := addr.IP.To4()
	if ip4 == nil {
		return nil, fmt.Errorf("raw listens on IPv4 only, not %s", cfg.Listen)
	}
	p := &pool{}
	for i := 0; i < cfg.Threads; i++ {
		w, err := newWorker(i, ip4, addr.Port)
		if err != nil {
			p.close()
			return nil, err
		}
		p.workers = append(p.workers, w)
	}
	for _, w := range p.workers {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			w.loop()
		}()
	}
	return p, nil
}

func newWorker(id int, ip []byte, port int) (*worker, error) {
	w := &worker{id: id, lfd: -1, evfd: -1, epfd: -1, events: make([]unix.EpollEvent, 256), rbuf: make([]byte, 4096)}
	fail := func(err error) (*worker, error) {
		w.closeFds()
		return nil, err
	}
	var err error
	if w.epfd, err = unix.EpollCreate1(unix.EPOLL_CLOEXEC); err != nil {
		return fail(err)
	}
	if w.evfd, err = unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC); err != nil {
		return fail(err)
	}
	if w.lfd, err = unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0); err != nil {
		return fail(err)
	}
	for _, opt := range []int{unix.SO_REUSEADDR, unix.SO_REUSEPORT} {
		if err := unix.SetsockoptInt(w.lfd, unix.SOL_SOCKET, opt, 1); err != nil {
			return fail(err)
		}
	}
	sa := &unix.SockaddrInet4{Port: port}
	copy(sa.Addr[:], ip)
	if err := unix.Bind(w.lfd, sa); err != nil {
		return fail(fmt.Errorf("bind %v:%d: %w", net.IP(ip), port, err))
	}
	if err := unix.Listen(w.lfd, 4096); err != nil {
		return fail(err)
	}
	for _, fd := range []int{w.lfd, w.evfd} {
		if err := unix.EpollCtl(w.epfd, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fd)}); err != nil {
			return fail(err)
		}
	}
	return w, nil
}

func (w *worker) closeFds() {
	for _, fd := range []int{w.lfd, w.evfd, w.epfd} {
		if fd >= 0 {
			unix.Close(fd)
		}
	}
}

// post hands j (or, with j nil and stop set, the end) to the worker.
func (w *worker) post(j *job, stop bool) {
	w.mu.Lock()
	w.inbox, w.stop = j, w.stop || stop
	w.mu.Unlock()
	one := [8]byte{1}
	_, _ = unix.Write(w.evfd, one[:])
}

func (p *pool) close() {
	for _, w := range p.workers {
		w.post(nil, true)
	}
	p.wg.Wait()
}

func (p *pool) sockets() int {
	n := 0
	for _, w := range p.workers {
		n += int(w.nReady.Load())
	}
	return n
}

// run runs plan on every worker and returns when all issued it.
func (p *pool) run(ctx context.Context, plan Plan) (Result, error) {
	if err := plan.Validate(); err != nil {
		return Result{}, err
	}
	p.runMu.Lock()
	defer p.runMu.Unlock()
	j := &job{plan: plan, done: make(chan workerResult, len(p.workers))}
	res := Result{PerCal: make([]int64, plan.Calendars)}
	if plan.Backlog > 0 {
		j.start = time.Now()
		j.fan = fanFrames(plan, j.start.UnixNano())
		res.Commits = int64(plan.Backlog)
		for c := range res.PerCal {
			res.PerCal[c] = int64(plan.Backlog)
		}
	} else {
		// A moment ahead, so every worker starts on time.
		j.start = time.Now().Add(2 * time.Millisecond)
		res.Commits = plan.Commits()
		for k := int64(0); k < res.Commits; k++ {
			c, _ := plan.Commit(k)
			res.PerCal[c]++
		}
	}
	for _, w := range p.workers {
		w.post(j, false)
	}
	var end time.Time
	for range p.workers {
		select {
		case r := <-j.done:
			res.Sockets += r.sockets
			res.Behind = max(res.Behind, r.behind)
			if r.end.After(end) {
				end = r.end
			}
		case <-ctx.Done():
			return res, ctx.Err()
		}
	}
	res.Seconds = end.Sub(j.start).Seconds()
	return res, nil
}

// fanFrames encodes each calendar's frames of a fan-out backlog, all
// stamped ns, transaction j's frame at j*frameLen.
func fanFrames(p Plan, ns int64) [][]byte {
	fan := make([][]byte, p.Calendars)
	for c := range fan {
		b := make([]byte, 0, p.Backlog*frameLen)
		for j := 0; j < p.Backlog; j++ {
			b = appendFrame(b, c, j%p.EventsPerCalendar, ns, lsnOf(int64(j)))
		}
		fan[c] = b
	}
	return fan
}

func (w *worker) loop() {
	defer w.shutdown()
	timeout := time.Duration(-1)
	for {
		n, err := w.wait(timeout)
		if err != nil && !errors.Is(err, unix.EINTR) {
			panic(fmt.Sprintf("raw: epoll wait: %v", err))
		}
		for i := 0; i < n; i++ {
			ev := w.events[i]
			switch fd := int(ev.Fd); fd {
			case w.lfd:
				w.accept()
			case w.evfd:
				var b [8]byte
				_, _ = unix.Read(w.evfd, b[:])
				w.mu.Lock()
				j, stop := w.inbox, w.stop
				w.inbox = nil
				w.mu.Unlock()
				if stop {
					return
				}
				if j != nil {
					w.begin(j)
				}
			default:
				if fd >= len(w.socks) || w.socks[fd] == nil {
					continue
				}
				s := w.socks[fd]
				if ev.Events&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
					w.readable(s)
				}
				if !s.closed && s.blocked && ev.Events&unix.EPOLLOUT != 0 {
					s.blocked = false
					w.flush(s)
				}
			}
		}
		timeout = -1
		if w.job != nil && w.job.plan.Backlog == 0 {
			timeout = w.tick()
		}
	}
}

// wait is epoll_pwait2 with a nanosecond timeout (negative: none), or
// epoll_wait with it rounded up to milliseconds where the kernel lacks it.
func (w *worker) wait(timeout time.Duration) (int, error) {
	if !noPwait2.Load() {
		var r uintptr
		var e unix.Errno
		if timeout < 0 {
			r, _, e = unix.Syscall6(unix.SYS_EPOLL_PWAIT2, uintptr(w.epfd), uintptr(unsafe.Pointer(&w.events[0])), uintptr(len(w.events)), 0, 0, 0)
		} else {
			ts := unix.NsecToTimespec(int64(timeout))
			r, _, e = unix.Syscall6(unix.SYS_EPOLL_PWAIT2, uintptr(w.epfd), uintptr(unsafe.Pointer(&w.events[0])), uintptr(len(w.events)), uintptr(unsafe.Pointer(&ts)), 0, 0)
		}
		if e == 0 {
			return int(r), nil
		}
		if e != unix.ENOSYS {
			return 0, e
		}
		noPwait2.Store(true)
	}
	ms := -1
	if timeout >= 0 {
		ms = int((timeout + time.Millisecond - 1) / time.Millisecond)
	}
	return unix.EpollWait(w.epfd, w.events, ms)
}

func (w *worker) accept() {
	for {
		fd, _, err := unix.Accept4(w.lfd, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
		if err != nil {
			if errors.Is(err, unix.EINTR) || errors.Is(err, unix.ECONNABORTED) {
				continue
			}
			return // EAGAIN; EMFILE leaves the rest in the backlog
		}
		_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
		ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET, Fd: int32(fd)}
		if err := unix.EpollCtl(w.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
			unix.Close(fd)
			continue
		}
		for fd >= len(w.socks) {
			w.socks = append(w.socks, make([]*sock, len(w.socks)+64)...)
		}
		w.socks[fd] = &sock{fd: fd, user: -1, idx: -1, in: make([]byte, 0, 512)}
	}
}

// readable reads until EAGAIN (the registration is edge-triggered).
func (w *worker) readable(s *sock) {
	for !s.closed {
		var n int
		var err error
		if s.state == stReady {
			n, err = unix.Read(s.fd, w.rbuf) // discarded
		} else {
			if len(s.in) == cap(s.in) {
				if cap(s.in) >= 16<<10 {
					w.close(s)
					return
				}
				s.in = append(s.in, make([]byte, cap(s.in))...)[:len(s.in)]
			}
			n, err = unix.Read(s.fd, s.in[len(s.in):cap(s.in)])
			if n > 0 {
				s.in = s.in[:len(s.in)+n]
				w.handshake(s)
			}
		}
		switch {
		case n > 0:
		case err == nil: // EOF
			w.close(s)
		case errors.Is(err, unix.EINTR):
		case errors.Is(err, unix.EAGAIN):
			return
		default:
			w.close(s)
		}
	}
}

// handshake advances s through the HTTP upgrade and the CONNECT.
func (w *worker) handshake(s *sock) {
	if s.state == stHTTP {
		i := bytes.Index(s.in, []byte("\r\n\r\n"))
		if i < 0 {
			return
		}
		req, err := parseRequest(s.in[:i+4])
		w.nextSID++
		sid := "raw" + strconv.Itoa(w.id) + "-" + strconv.FormatUint(w.nextSID, 10)
		switch {
		case err == nil && req.websocket && req.upgrade && len(req.key) > 0:
			if !w.writeSmall(s, upgradeResponse(req.key, sid)) {
				return
			}
			s.state = stWS
			s.in = append(s.in[:0], s.in[i+4:]...)
		case err == nil && req.polling:
			w.writeSmall(s, pollingResponse(sid))
			w.close(s)
			return
		default:
			w.writeSmall(s, badRequestResponse)
			w.close(s)
			return
		}
	}
	for s.state == stWS {
		f, n, err := parseClientFrame(s.in)
		if err != nil {
			w.close(s)
			return
		}
		if n == 0 {
			return
		}
		switch f.op {
		case 0x8: // close
			w.close(s)
			return
		case 0x1:
			u, err := userOfConnect(f.payload)
			if err != nil {
				w.writeSmall(s, appendServerFrame(nil, []byte(`44{"message":"raw: `+err.Error()+`"}`)))
				w.close(s)
				return
			}
			if !w.writeSmall(s, appendServerFrame(nil, []byte(`40{"sid":"raw`+strconv.Itoa(w.id)+"-"+strconv.Itoa(s.fd)+`"}`))) {
				return
			}
			s.user, s.state, s.in = u, stReady, nil
			s.idx = len(w.ready)
			w.ready = append(w.ready, s)
			w.nReady.Add(1)
			return
		}
		s.in = append(s.in[:0], s.in[n:]...)
	}
}

// writeSmall writes a handshake reply whole; a fresh socket always has the
// room, so a short write closes it.
func (w *worker) writeSmall(s *sock, b []byte) bool {
	for {
		n, err := unix.Write(s.fd, b)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || n != len(b) {
			w.close(s)
			return false
		}
		return true
	}
}

func (w *worker) close(s *sock) {
	if s.closed {
		return
	}
	s.closed = true
	unix.Close(s.fd) // leaves the epoll set with it
	w.socks[s.fd] = nil
	if s.idx >= 0 {
		last := w.ready[len(w.ready)-1]
		w.ready[s.idx], last.idx = last, s.idx
		w.ready = w.ready[:len(w.ready)-1]
		s.idx = -1
		w.nReady.Add(-1)
	}
	if s.ext != nil {
		s.ext = nil
		w.fanDone()
	}
}

// begin starts j: the room lists of this worker's connected sockets, or,
// for a fan-out, every socket's first write.
func (w *worker) begin(j *job) {
	w.job, w.next, w.behind, w.sockets = j, 0, 0, len(w.ready)
	cals := j.plan.Calendars
	if j.plan.Backlog > 0 {
		w.pending = len(w.ready)
		if w.pending == 0 {
			w.finish()
			return
		}
		for _, s := range append([]*sock(nil), w.ready...) {
			s.ext, s.extOff = j.fan[s.user%cals], 0
		}
		for _, s := range append([]*sock(nil), w.ready...) {
			if !s.closed && !s.blocked {
				w.flush(s)
			}
		}
		return
	}
	if cap(w.rooms) < cals {
		w.rooms = make([][]*sock, cals)
	}
	w.rooms = w.rooms[:cals]
	for c := range w.rooms {
		w.rooms[c] = w.rooms[c][:0]
	}
	for _, s := range w.ready {
		c := s.user % cals
		w.rooms[c] = append(w.rooms[c], s)
	}
}

// tick issues every commit of the rate plan due by now: each commit's
// frame is stamped with the time it is taken, encoded once and copied to
// its room's sockets, then each socket gets one write. It returns how long until the next commit is due, or -1
// when the plan is done.
func (w *worker) tick() time.Duration {
	j := w.job
	p := j.plan
	total, iv := p.Commits(), p.Interval()
	el := time.Since(j.start)
	if el < 0 {
		return -el
	}
	due := min(int64(el/iv)+1, total)
	if due > w.next {
		w.behind = max(w.behind, el-time.Duration(w.next)*iv)
	}
	for k := w.next; k < due; k++ {
		c, e := p.Commit(k)
		w.frame = appendFrame(w.frame[:0], c, e, time.Now().UnixNano(), lsnOf(k))
		for _, s := range w.rooms[c] {
			if s.closed {
				continue
			}
			s.out = append(s.out, w.frame...)
			if !s.queued {
				s.queued = true
				w.batch = append(w.batch, s)
			}
		}
	}
	w.next = due
	for _, s := range w.batch {
		s.queued = false
		if !s.closed && !s.blocked {
			w.flush(s)
		}
	}
	clear(w.batch)
	w.batch = w.batch[:0]
	if w.next >= total {
		w.finish()
		return -1
	}
	// Late is due now: a negative timeout would mean none.
	return max(time.Duration(w.next)*iv-time.Since(j.start), 0)
}

// flush writes what s has, one write(2) per call unless the kernel took
// all of it; a short write waits for EPOLLOUT.
func (w *worker) flush(s *sock) {
	for {
		var b []byte
		switch {
		case s.outOff < len(s.out):
			b = s.out[s.outOff:]
		case s.extOff < len(s.ext):
			b = s.ext[s.extOff:]
		default:
			s.out, s.outOff = s.out[:0], 0
			if s.ext != nil {
				s.ext, s.extOff = nil, 0
				w.fanDone()
			}
			return
		}
		n, err := unix.Write(s.fd, b)
		if n > 0 {
			if s.outOff < len(s.out) {
				s.outOff += n
			} else {
				s.extOff += n
			}
		}
		switch {
		case err == nil && n == len(b):
		case err == nil, errors.Is(err, unix.EAGAIN):
			s.blocked = true
			return
		case errors.Is(err, unix.EINTR):
		default:
			w.close(s)
			return
		}
	}
}

// fanDone counts one socket of a fan-out fully written.
func (w *worker) fanDone() {
	w.pending--
	if w.pending == 0 && w.job != nil && w.job.plan.Backlog > 0 {
		w.finish()
	}
}

func (w *worker) finish() {
	w.job.done <- workerResult{sockets: w.sockets, behind: w.behind, end: time.Now()}
	w.job = nil
	for c := range w.rooms {
		clear(w.rooms[c])
		w.rooms[c] = w.rooms[c][:0]
	}
}

func (w *worker) shutdown() {
	for _, s := range w.socks {
		if s != nil && !s.closed {
			s.closed = true
			unix.Close(s.fd)
		}
	}
	w.socks, w.ready = nil, nil
	w.nReady.Store(0)
	w.closeFds()
}
