package harness

import (
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/koordi/koordi-realtime/schema"
)

func TestIDsAreDistinctUUIDs(t *testing.T) {
	seen := map[string]bool{}
	add := func(id string) {
		t.Helper()
		if !schema.IsUUID(id) {
			t.Fatalf("%q is not a uuid", id)
		}
		if seen[id] {
			t.Fatalf("%q twice", id)
		}
		seen[id] = true
	}
	for i := range 300 {
		add(UserID(i))
		add(CalendarID(i))
		for e := range 3 {
			add(EventID(i, e))
		}
	}
	add(EventID(0, 0xffff))
}

func TestTopologyRoomsAreEven(t *testing.T) {
	top := Topology{Users: 10_000, Calendars: 100}
	size := map[int]int{}
	for u := range top.Users {
		size[top.CalendarOf(u)]++
	}
	if len(size) != 100 {
		t.Fatalf("%d calendars used", len(size))
	}
	for c, n := range size {
		if n != 100 {
			t.Fatalf("calendar %d has %d members", c, n)
		}
	}
}

func TestProcAccountingOfSelf(t *testing.T) {
	rss, err := RSS(os.Getpid())
	if err != nil || rss < 1<<20 {
		t.Fatalf("RSS of self: %d, %v", rss, err)
	}
	x := 0
	for i := range 50_000_000 {
		x += i
	}
	_ = x
	cpu, err := CPUTime(os.Getpid())
	if err != nil || cpu <= 0 {
		t.Fatalf("CPU time of self: %v, %v", cpu, err)
	}
	if _, err := RSS(-1); err == nil {
		t.Fatal("RSS of pid -1: no error")
	}
	if LoadAvg() == "?" {
		t.Fatal("no load average")
	}
}

func TestMemoryOfSelf(t *testing.T) {
	m, err := Memory(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if m.RSS <= 0 || m.HWM < m.RSS || m.Anon <= 0 {
		t.Fatalf("implausible %+v", m)
	}
}

// TestTreeCPUTime: a child's CPU counts after it ended (the parent's
// cutime), as a PostgreSQL backend's does once the postmaster reaped it.
func TestTreeCPUTime(t *testing.T) {
	self := os.Getpid()
	tree0, err := TreeCPUTime(self)
	if err != nil {
		t.Fatal(err)
	}
	own0, _ := CPUTime(self)
	if out, err := exec.Command("sh", "-c", "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done").CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	tree1, _ := TreeCPUTime(self)
	own1, _ := CPUTime(self)
	if child := (tree1 - tree0) - (own1 - own0); child < 50*time.Millisecond {
		t.Fatalf("the child's CPU time counted %s, want its whole busy loop (well over 50ms)", child)
	}
}

// TestSyscallsCountsWritesAndReads: each write(2) to a pipe and each read(2)
// from it counts once, as the fan-out's writes per connection assume.
func TestSyscallsCountsWritesAndReads(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	reads0, writes0, err := Syscalls(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	const n = 200
	buf := []byte{1}
	for range n {
		if _, err := w.Write(buf); err != nil {
			t.Fatal(err)
		}
		if _, err := r.Read(buf); err != nil {
			t.Fatal(err)
		}
	}
	reads1, writes1, err := Syscalls(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	// Other goroutines of the test binary may make a few calls of their own.
	if d := writes1 - writes0; d < n || d > n+50 {
		t.Errorf("%d writes counted for %d", d, n)
	}
	if d := reads1 - reads0; d < n || d > n+50 {
		t.Errorf("%d reads counted for %d (reading /proc/self/io counts too)", d, n)
	}
	if _, _, err := Syscalls(-1); err == nil {
		t.Error("Syscalls of pid -1: no error")
	}
}
