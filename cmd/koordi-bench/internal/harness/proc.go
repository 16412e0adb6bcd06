package harness

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Process is a server under test running as a child process.
type Process struct {
	Name string
	URL  string // http://127.0.0.1:<port>
	cmd  *exec.Cmd
	log  *limitedWriter
	done chan struct{}
}

// PID is the child's process id (for /proc accounting).
func (p *Process) PID() int { return p.cmd.Process.Pid }

// StartProcess runs argv with env added to this process's environment,
// waits until url answers an Engine.IO handshake, and returns the process.
func StartProcess(ctx context.Context, name, url string, env []string, dir string, argv ...string) (*Process, error) {
	p, err := Spawn(name, env, dir, argv...)
	if err != nil {
		return nil, err
	}
	p.URL = url
	if err := p.waitReady(ctx, 60*time.Second); err != nil {
		p.Stop()
		return nil, fmt.Errorf("%s not ready: %w; output: %s", name, err, lastLines(p.log.String(), 8))
	}
	return p, nil
}

// Spawn runs argv as StartProcess does, without waiting for anything: a
// helper process that serves no Socket.IO (pg_recvlogical, say).
func Spawn(name string, env []string, dir string, argv ...string) (*Process, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	log := &limitedWriter{n: 1 << 20}
	cmd.Stdout = log
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &Process{Name: name, cmd: cmd, log: log, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(p.done) }()
	return p, nil
}

func (p *Process) waitReady(ctx context.Context, d time.Duration) error {
	deadline := time.Now().Add(d)
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	for {
		select {
		case <-p.done:
			return errors.New("exited")
		default:
		}
		resp, err := client.Get(p.URL + "/socket.io/?EIO=4&transport=polling")
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && len(body) > 0 && body[0] == '0' {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no handshake within %s (last: %v)", d, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Stop sends SIGTERM, then SIGKILL after 10s, and waits for the exit.
func (p *Process) Stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// Signal sends sig to the process (not its group).
func (p *Process) Signal(sig os.Signal) error { return p.cmd.Process.Signal(sig) }

// Done is closed once the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Output is the tail of the process's combined output.
func (p *Process) Output() string { return lastLines(p.log.String(), 20) }

// Log is the process's combined output so far (its first MiB).
func (p *Process) Log() string { return p.log.String() }

// limitedWriter keeps the first n bytes written to it.
type limitedWriter struct {
	mu  sync.Mutex
	buf bytes.Buffer
	n   int
}

func (l *limitedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.n <= 0 {
		return len(b), nil
	}
	k := min(len(b), l.n)
	l.n -= k
	l.buf.Write(b[:k])
	return len(b), nil
}

func (l *limitedWriter) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

// FreePort returns a free TCP port on 127.0.0.1.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// RSS returns the resident set size of pid in bytes (VmRSS).
func RSS(pid int) (int64, error) {
	m, err := Memory(pid)
	return m.RSS, err
}

// Mem is a process's memory as /proc/<pid>/status reports it, in bytes.
type Mem struct {
	RSS  int64 `json:"vm_rss_bytes"` // VmRSS: resident now
	HWM  int64 `json:"vm_hwm_bytes"` // VmHWM: the most resident since the process started
	Anon int64 `json:"rss_anon_bytes"`
}

// Memory reads VmRSS, VmHWM and RssAnon of pid.
func Memory(pid int) (Mem, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return Mem{}, err
	}
	defer f.Close()
	var m Mem
	found := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		key, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		var dst *int64
		switch key {
		case "VmRSS":
			dst, found = &m.RSS, true
		case "VmHWM":
			dst = &m.HWM
		case "RssAnon":
			dst = &m.Anon
		default:
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
		if err != nil {
			return m, fmt.Errorf("/proc/%d/status %s: %w", pid, key, err)
		}
		*dst = kb << 10
	}
	if !found {
		return m, fmt.Errorf("no VmRSS for pid %d", pid)
	}
	return m, nil
}

// CPUTime returns the user+system CPU time pid has used (including
// reaped children, which the servers do not have).
func CPUTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the command name, which is in parentheses and may
	// contain spaces.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("parse /proc/%d/stat", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("parse /proc/%d/stat", pid)
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	const hz = 100 // USER_HZ on Linux
	return time.Duration(ut+st) * time.Second / hz, nil
}

// Syscalls returns the read- and write-family system calls pid has made
// (syscr and syscw of /proc/<pid>/io: read, readv, recvmsg, … and write,
// writev, sendmsg, …). How many writes a server needs for the same
// deliveries says how well it coalesces them, and its clients pay a read
// for each.
func Syscalls(pid int) (reads, writes int64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		key, v, ok := strings.Cut(line, ": ")
		if !ok {
			continue
		}
		switch key {
		case "syscr":
			reads, err = strconv.ParseInt(v, 10, 64)
		case "syscw":
			writes, err = strconv.ParseInt(v, 10, 64)
		}
		if err != nil {
			return 0, 0, fmt.Errorf("parse /proc/%d/io %s: %w", pid, key, err)
		}
	}
	return reads, writes, nil
}

// TreeCPUTime is the CPU time of process pid, of its children that ended
// (cutime, cstime) and of those alive: all a PostgreSQL server spent, given
// its postmaster, backends that came and went included.
func TreeCPUTime(pid int) (time.Duration, error) {
	own, err := statFields(pid)
	if err != nil {
		return 0, err
	}
	total := ticks(own, 11, 12, 13, 14)
	dir, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	for _, d := range dir {
		child, err := strconv.Atoi(d.Name())
		if err != nil || child == pid {
			continue
		}
		f, err := statFields(child)
		if err != nil || len(f) < 2 || f[1] != strconv.Itoa(pid) {
			continue
		}
		total += ticks(f, 11, 12)
	}
	const hz = 100 // USER_HZ on Linux
	return time.Duration(total) * time.Second / hz, nil
}

// statFields is /proc/pid/stat after the command name: state, ppid, …
func statFields(pid int) ([]string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil, err
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return nil, fmt.Errorf("parse /proc/%d/stat", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 15 {
		return nil, fmt.Errorf("parse /proc/%d/stat", pid)
	}
	return f, nil
}

func ticks(f []string, idx ...int) int64 {
	var n int64
	for _, i := range idx {
		v, _ := strconv.ParseInt(f[i], 10, 64)
		n += v
	}
	return n
}

// LoadAvg returns /proc/loadavg's first three fields.
func LoadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// RaiseNoFile raises this process's open-file limit (soft and, as root,
// hard) to at least n; children inherit it.
func RaiseNoFile(n uint64) (uint64, error) {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		return 0, err
	}
	if r.Cur >= n {
		return r.Cur, nil
	}
	want := r
	want.Cur = n
	if want.Max < n {
		want.Max = n
	}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want); err != nil {
		// Not root: take what the hard limit allows.
		r.Cur = r.Max
		if err2 := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &r); err2 != nil {
			return 0, err2
		}
		return r.Cur, fmt.Errorf("raise open files to %d: %w (have %d)", n, err, r.Cur)
	}
	return n, nil
}
