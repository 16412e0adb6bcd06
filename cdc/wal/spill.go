package wal

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
)

// Large transactions are spilled to disk: a transaction is held whole until
// its COMMIT (derivation needs names as of the commit, and cascades wherever
// they sit), and an UPDATE of 200,000 rows decoded into maps would hold
// gigabytes. Past Tx.Add's limit every change goes to an unlinked temporary
// file instead, which Each reads back once per pass; memory then holds one
// change at a time.

// approxSize estimates a change's memory, to decide when to spill.
func approxSize(c *Change) int {
	n := 64 + len(c.Table) + len(c.Message)
	for _, r := range [2]Row{c.Old, c.New} {
		n += 24 + 24*len(r.cells)
		for _, c := range r.cells {
			n += len(c.text)
		}
	}
	return n
}

// Add appends a change. Once the changes held in memory exceed spillAt
// bytes (0: never), they and every later one go to a temporary file in dir
// (empty: the system's). The file is unlinked at once, so nothing is left
// behind whatever happens; Release closes it.
func (tx *Tx) Add(c Change, spillAt int, dir string) error {
	if tx.spill != nil {
		return tx.spill.write(&c)
	}
	tx.Changes = append(tx.Changes, c)
	tx.size += approxSize(&c)
	if spillAt <= 0 || tx.size <= spillAt {
		return nil
	}
	f, err := os.CreateTemp(dir, "koordi-tx-*")
	if err != nil {
		return fmt.Errorf("spill transaction: %w", err)
	}
	_ = os.Remove(f.Name())
	s := &spillFile{f: f, w: bufio.NewWriterSize(f, 64<<10)}
	for i := range tx.Changes {
		if err := s.write(&tx.Changes[i]); err != nil {
			s.close()
			return err
		}
	}
	tx.spill, tx.Changes = s, nil
	return nil
}

// Len is the number of changes.
func (tx *Tx) Len() int {
	if tx.spill != nil {
		return tx.spill.n
	}
	return len(tx.Changes)
}

// MemBytes is about how much of the heap the changes hold: 0 once they
// are on disk.
func (tx *Tx) MemBytes() int {
	if tx.spill != nil {
		return 0
	}
	return tx.size
}

// Spilled reports whether the changes are on disk.
func (tx *Tx) Spilled() bool { return tx.spill != nil }

// Each calls fn for every change in WAL order until fn returns false. A
// spilled transaction is read back from its file; a read error stops the
// walk and is kept (see Err), never panics.
func (tx *Tx) Each(fn func(*Change) bool) {
	if tx.spill == nil {
		for i := range tx.Changes {
			if !fn(&tx.Changes[i]) {
				return
			}
		}
		return
	}
	if tx.err != nil {
		return
	}
	if err := tx.spill.each(fn); err != nil {
		tx.err = fmt.Errorf("read spilled transaction: %w", err)
	}
}

// Err reports a failure to read a spilled transaction back.
func (tx *Tx) Err() error { return tx.err }

// Release frees a spilled transaction's file.
func (tx *Tx) Release() {
	if tx.spill != nil {
		tx.spill.close()
		tx.spill = nil
	}
}

type spillFile struct {
	f *os.File
	w *bufio.Writer
	n int
	// The column lists of the spilled rows, which a record names by
	// position: rows are written as values only and read back sharing
	// their relation's Columns, as decoded rows do.
	cols  []*Columns
	colID map[*Columns]int
}

func (s *spillFile) close() { _ = s.f.Close() }

func (s *spillFile) write(c *Change) error {
	var b []byte
	b = append(b, byte(c.Op))
	flags := byte(0)
	if c.OldFull {
		flags |= 1
	}
	if !c.Old.IsZero() {
		flags |= 2
	}
	if !c.New.IsZero() {
		flags |= 4
	}
	b = append(b, flags)
	b = appendString(b, c.Table)
	b = appendString(b, string(c.Message))
	b = s.appendRow(b, c.Old)
	b = s.appendRow(b, c.New)
	var hdr [binary.MaxVarintLen64]byte
	if _, err := s.w.Write(hdr[:binary.PutUvarint(hdr[:], uint64(len(b)))]); err != nil {
		return fmt.Errorf("spill transaction: %w", err)
	}
	if _, err := s.w.Write(b); err != nil {
		return fmt.Errorf("spill transaction: %w", err)
	}
	s.n++
	return nil
}

func (s *spillFile) each(fn func(*Change) bool) error {
	if err := s.w.Flush(); err != nil {
		return err
	}
	// Read with ReadAt through a section, never moving the file's offset:
	// a walk may run inside another walk of the same transaction (derive
	// counts a sync's changes while deriving them), and writes append at
	// the offset, which stays at the end.
	end, err := s.f.Seek(0, io.SeekCurrent)
	if err != nil {
		return err
	}
	r := bufio.NewReaderSize(io.NewSectionReader(s.f, 0, end), 64<<10)
	var buf []byte
	for range s.n {
		n, err := binary.ReadUvarint(r)
		if err != nil {
			return err
		}
		if cap(buf) < int(n) {
			buf = make([]byte, n)
		}
		buf = buf[:n]
		if _, err := io.ReadFull(r, buf); err != nil {
			return err
		}
		c, err := decodeChange(buf, s.cols)
		if err != nil {
			return err
		}
		if !fn(&c) {
			return nil
		}
	}
	return nil
}

var errCorrupt = errors.New("corrupt spill record")

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// appendRow writes r as the position of its Columns in s.cols and a
// presence-and-validity byte and text per column.
func (s *spillFile) appendRow(b []byte, r Row) []byte {
	if r.IsZero() {
		return b
	}
	id, ok := s.colID[r.cols]
	if !ok {
		if s.colID == nil {
			s.colID = make(map[*Columns]int)
		}
		id = len(s.cols)
		s.cols = append(s.cols, r.cols)
		s.colID[r.cols] = id
	}
	b = binary.AppendUvarint(b, uint64(id))
	for _, c := range r.cells {
		switch {
		case !c.present:
			b = append(b, 0)
			continue
		case c.valid:
			b = append(b, 2)
		default:
			b = append(b, 1)
		}
		b = appendString(b, c.text)
	}
	return b
}

// reader reads one spill record. The record is made one string, which the
// values and column names it holds share: a record is read back every time
// derivation walks the transaction, and a string per value and per name was
// most of that walk's time. Values kept past the walk are cloned by their
// keeper (derive's State).
type reader struct {
	s   string
	err error
}

func (r *reader) uvarint() uint64 {
	var v uint64
	for i := 0; i < len(r.s) && i < binary.MaxVarintLen64; i++ {
		c := r.s[i]
		if c < 0x80 {
			if i == binary.MaxVarintLen64-1 && c > 1 {
				break // overflows 64 bits
			}
			r.s = r.s[i+1:]
			return v | uint64(c)<<(7*i)
		}
		v |= uint64(c&0x7f) << (7 * i)
	}
	r.err = errCorrupt
	return 0
}

func (r *reader) str() string {
	n := r.uvarint()
	if r.err != nil || n > uint64(len(r.s)) {
		r.err = errCorrupt
		return ""
	}
	s := r.s[:n]
	r.s = r.s[n:]
	return s
}

func (r *reader) byte1() byte {
	if len(r.s) == 0 {
		r.err = errCorrupt
		return 0
	}
	c := r.s[0]
	r.s = r.s[1:]
	return c
}

func (r *reader) row(present bool, cols []*Columns) Row {
	if !present {
		return Row{}
	}
	id := r.uvarint()
	if r.err != nil || id >= uint64(len(cols)) {
		r.err = errCorrupt
		return Row{}
	}
	row := NewRow(cols[id])
	for i := range row.cells {
		switch r.byte1() {
		case 0:
		case 1:
			row.cells[i] = cell{text: r.str(), present: true}
		case 2:
			row.cells[i] = cell{text: r.str(), valid: true, present: true}
		default:
			r.err = errCorrupt
		}
		if r.err != nil {
			return Row{}
		}
	}
	return row
}

// decodeChange reads a record whose rows name their columns in cols.
func decodeChange(b []byte, cols []*Columns) (Change, error) {
	r := &reader{s: string(b)}
	var c Change
	c.Op = Op(r.byte1())
	flags := r.byte1()
	c.OldFull = flags&1 != 0
	c.Table = r.str()
	if m := r.str(); m != "" {
		c.Message = []byte(m)
	}
	c.Old = r.row(flags&2 != 0, cols)
	c.New = r.row(flags&4 != 0, cols)
	return c, r.err
}
