package engineio

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/golden")

// golden compares got with testdata/golden/name, or writes it with -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", "golden", name)
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s:\n got %q\nwant %q", name, got, want)
	}
}

func TestAppendPayloadGolden(t *testing.T) {
	cases := []struct {
		name string
		ps   []Packet
	}{
		{"one-text", []Packet{{Data: []byte("4hello")}}},
		{"three-text", []Packet{{Data: []byte("4test1")}, {Data: []byte("4test2")}, {Data: []byte("4test3")}}},
		{"text-and-binary", []Packet{{Data: []byte("4hello")}, {Data: []byte{1, 2, 3, 4}, Binary: true}}},
		{"ping", []Packet{{Data: []byte("2")}}},
		{"noop", []Packet{{Data: []byte("6")}}},
		{"empty-binary", []Packet{{Data: nil, Binary: true}}},
		{"utf8", []Packet{{Data: []byte("4€ and 😀")}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := AppendPayload(nil, c.ps)
			if len(got) != payloadLen(c.ps) {
				t.Errorf("payloadLen = %d, encoded %d bytes", payloadLen(c.ps), len(got))
			}
			golden(t, "payload-"+c.name+".txt", got)
			// The encoding decodes back to the same packets.
			ds, err := DecodePayload(got)
			if err != nil {
				t.Fatal(err)
			}
			if len(ds) != len(c.ps) {
				t.Fatalf("decoded %d packets, want %d", len(ds), len(c.ps))
			}
			for i, d := range ds {
				p := c.ps[i]
				if d.Binary != p.Binary {
					t.Errorf("packet %d: binary %v, want %v", i, d.Binary, p.Binary)
				}
				want := p.Data
				if !p.Binary {
					want = p.Data[1:]
					if d.Type != p.Data[0] {
						t.Errorf("packet %d: type %c, want %c", i, d.Type, p.Data[0])
					}
				}
				if !bytes.Equal(d.Data, want) {
					t.Errorf("packet %d: data %q, want %q", i, d.Data, want)
				}
			}
		})
	}
}

func TestDecodePayloadGolden(t *testing.T) {
	cases := []struct {
		name string
		in   string
	}{
		{"message", "4hello"},
		{"several", "4a\x1e3\x1e2probe\x1e6"},
		{"binary", "bAQIDBA=="},
		{"empty-message", "4"},
		{"close", "1"},
		// Errors: the whole payload is refused.
		{"err-empty", ""},
		{"err-unknown-type", "abc"},
		{"err-type-7", "7x"},
		{"err-trailing-separator", "4a\x1e"},
		{"err-empty-record", "4a\x1e\x1e4b"},
		{"err-bad-base64", "b!!!"},
		{"err-binary-in-middle", "4a\x1ebAQ=\x1e9"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ds, err := DecodePayload([]byte(c.in))
			var out bytes.Buffer
			if err != nil {
				if !errors.Is(err, ErrBadPacket) {
					t.Errorf("error %v is not ErrBadPacket", err)
				}
				fmt.Fprintf(&out, "error: %v\n", err)
			}
			for _, d := range ds {
				fmt.Fprintf(&out, "type=%c binary=%v data=%q\n", d.Type, d.Binary, d.Data)
			}
			golden(t, "decode-"+c.name+".txt", out.Bytes())
		})
	}
}

func FuzzDecodePayload(f *testing.F) {
	for _, s := range []string{"4hello", "4a\x1e4b", "bAQIDBA==", "2probe", "abc", "", "\x1e", "b", "4\x1eb"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		ds, err := DecodePayload(body)
		if err != nil {
			if ds != nil || !errors.Is(err, ErrBadPacket) {
				t.Fatalf("error %v with packets %v", err, ds)
			}
			return
		}
		if len(ds) > len(body) {
			t.Fatalf("%d packets from %d bytes", len(ds), len(body))
		}
		// What decodes re-encodes to something that decodes the same.
		ps := make([]Packet, len(ds))
		for i, d := range ds {
			if d.Binary {
				ps[i] = Packet{Data: d.Data, Binary: true}
			} else {
				ps[i] = Packet{Data: append([]byte{d.Type}, d.Data...)}
			}
		}
		again, err := DecodePayload(AppendPayload(nil, ps))
		if err != nil || len(again) != len(ds) {
			t.Fatalf("re-decode: %v, %d packets want %d", err, len(again), len(ds))
		}
		for i := range ds {
			if again[i].Type != ds[i].Type || again[i].Binary != ds[i].Binary || !bytes.Equal(again[i].Data, ds[i].Data) {
				t.Fatalf("packet %d changed: %+v → %+v", i, ds[i], again[i])
			}
		}
	})
}
