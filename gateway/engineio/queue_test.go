package engineio

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// TestSendQueueModel runs random pushes (shared sets with random indexes,
// packets of their own) and takes (whole, or by a byte limit) against a
// FIFO of packets, and checks after every step that the queue keeps
// exactly the sets its waiting slots point into: a set dropped too early
// would resolve to the wrong packet or panic, one kept too long is memory
// a drained queue holds on to. The sequence numbers start near the top of
// uint32 so that they wrap.
func TestSendQueueModel(t *testing.T) {
	for seed := range uint64(20) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 7))
			q := sendQueue{base: ^uint32(0) - 50}
			var model []Packet
			var sets []*Frames
			name := 0
			newSet := func() *Frames {
				ps := make([]Packet, 1+rng.IntN(8))
				for i := range ps {
					name++
					ps[i] = Packet{Data: fmt.Appendf(nil, "4p%d-%s", name, make([]byte, rng.IntN(20)))}
				}
				f := NewFrames(ps)
				sets = append(sets, f)
				return f
			}
			for step := range 3000 {
				switch op := rng.IntN(10); {
				case op < 5: // a fan-out: packets of new or recent sets, interleaved
					var call []*Frames
					for range 1 + rng.IntN(3) {
						recent := sets[max(len(sets)-3, 0):]
						if len(recent) == 0 || rng.IntN(2) == 0 {
							call = append(call, newSet())
						} else {
							call = append(call, recent[rng.IntN(len(recent))])
						}
					}
					var refs []FrameRef
					for range rng.IntN(12) {
						s := rng.IntN(len(call))
						i := rng.IntN(call[s].Len())
						refs = append(refs, FrameRef{Set: uint32(s), Index: uint32(i)})
						model = append(model, call[s].At(i))
					}
					q.pushFrom(call, refs)
				case op < 6: // a control packet
					p := Packet{Data: fmt.Appendf(nil, "2c%d", step)}
					q.push(p)
					model = append(model, p)
				default:
					if q.len() == 0 {
						continue
					}
					limit := -1
					if op < 9 {
						limit = rng.IntN(80)
					}
					got := q.take(nil, limit)
					if len(got) == 0 || len(got) > len(model) {
						t.Fatalf("step %d: took %d of %d", step, len(got), len(model))
					}
					size := 0
					for i, p := range got {
						if string(p.Data) != string(model[i].Data) {
							t.Fatalf("step %d: packet %d is %q, want %q", step, i, p.Data, model[i].Data)
						}
						size += len(p.Data)
					}
					if limit < 0 && len(got) != len(model) {
						t.Fatalf("step %d: a whole take left %d", step, len(model)-len(got))
					}
					if limit >= 0 && len(got) > 1 && size > limit {
						t.Fatalf("step %d: took %d bytes over a limit of %d", step, size, limit)
					}
					if limit >= 0 && len(got) < len(model) && size+len(model[len(got)].Data) <= limit {
						t.Fatalf("step %d: stopped at %d bytes with the next fitting in %d", step, size, limit)
					}
					model = model[len(got):]
				}
				if q.len() != len(model) {
					t.Fatalf("step %d: len %d, model %d", step, q.len(), len(model))
				}
				want := map[*Frames]bool{}
				for _, s := range q.slots[q.head:] {
					want[q.refs[s.ref-q.base]] = true
				}
				held := map[*Frames]bool{}
				for i, f := range q.refs {
					if f == nil {
						continue
					}
					if i < q.refHead {
						t.Fatalf("step %d: a set kept before refHead", step)
					}
					held[f] = true
				}
				if len(held) != len(want) {
					t.Fatalf("step %d: holds %d sets, its slots point into %d", step, len(held), len(want))
				}
			}
		})
	}
}

// TestSendQueueKeepsItsArray: a queue drained by turns while it is fed
// reuses its slots instead of growing.
func TestSendQueueKeepsItsArray(t *testing.T) {
	var q sendQueue
	sets := []*Frames{NewFrames([]Packet{{Data: []byte("4a")}, {Data: []byte("4b")}})}
	refs := []FrameRef{{Index: 0}, {Index: 1}}
	for range 8 {
		q.pushFrom(sets, refs)
	}
	c := cap(q.slots)
	for range 1000 {
		q.take(nil, 4) // two packets a turn
		q.pushFrom(sets, refs)
	}
	if cap(q.slots) != c || q.len() != 16 {
		t.Fatalf("cap %d (was %d), len %d", cap(q.slots), c, q.len())
	}
}

// TestSendQueueRefusesBadInput: pushing nothing keeps no set, and a
// reference past its set's end panics where it is queued, not later in a
// writer holding the connection's lock.
func TestSendQueueRefusesBadInput(t *testing.T) {
	var q sendQueue
	q.push()
	if q.len() != 0 || len(q.refs) != 0 {
		t.Fatalf("an empty push left %d slots, %d sets", q.len(), len(q.refs))
	}
	defer func() {
		if recover() == nil {
			t.Fatal("a reference past its set was queued")
		}
	}()
	q.pushFrom([]*Frames{NewFrames([]Packet{{Data: []byte("4a")}})}, []FrameRef{{Index: 1}})
}
