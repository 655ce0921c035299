package server

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/pion/stun/v3"
)

var (
	ip1     = netip.MustParseAddr("203.0.113.10")
	ip2     = netip.MustParseAddr("203.0.113.11")
	p1, p2  = uint16(3478), uint16(3479)
	full    = Addrs{Primary: netip.AddrPortFrom(ip1, p1), AltIP: ip2, AltPort: p2}
	client  = netip.MustParseAddrPort("198.51.100.7:40000")
	primary = netip.AddrPortFrom(ip1, p1)
)

type changeRequest uint32

func (c changeRequest) AddTo(m *stun.Message) error {
	m.Add(stun.AttrChangeRequest, []byte{0, 0, 0, byte(c)})
	return nil
}

type rawAttr struct {
	t stun.AttrType
	v []byte
}

func (r rawAttr) AddTo(m *stun.Message) error { m.Add(r.t, r.v); return nil }

func bindingRequest(t testing.TB, setters ...stun.Setter) []byte {
	t.Helper()
	m, err := stun.Build(append([]stun.Setter{stun.TransactionID, stun.BindingRequest}, setters...)...)
	if err != nil {
		t.Fatal(err)
	}
	return m.Raw
}

func decode(t *testing.T, b []byte) *stun.Message {
	t.Helper()
	m := &stun.Message{Raw: append([]byte(nil), b...)}
	if err := m.Decode(); err != nil {
		t.Fatalf("decode response: %v", err)
	}
	return m
}

func addrOf(t *testing.T, m *stun.Message, at stun.AttrType) netip.AddrPort {
	t.Helper()
	var a stun.MappedAddress
	if err := a.GetFromAs(m, at); err != nil {
		return netip.AddrPort{}
	}
	ip, _ := netip.AddrFromSlice(a.IP)
	return netip.AddrPortFrom(ip.Unmap(), uint16(a.Port))
}

func TestHandleBinding(t *testing.T) {
	tests := []struct {
		name      string
		addrs     Addrs
		local     netip.AddrPort
		setters   []stun.Setter
		stream    bool
		wantFrom  netip.AddrPort
		wantOther netip.AddrPort // zero: OTHER-ADDRESS absent
		wantCode  stun.ErrorCode // 0: success
	}{
		{"plain", full, primary, nil, false, primary, netip.AddrPortFrom(ip2, p2), 0},
		{"with fingerprint", full, primary, []stun.Setter{stun.Fingerprint}, false, primary, netip.AddrPortFrom(ip2, p2), 0},
		{"change ip and port", full, primary, []stun.Setter{changeRequest(0x06)}, false, netip.AddrPortFrom(ip2, p2), netip.AddrPortFrom(ip2, p2), 0},
		{"change port", full, primary, []stun.Setter{changeRequest(0x02)}, false, netip.AddrPortFrom(ip1, p2), netip.AddrPortFrom(ip2, p2), 0},
		{"change ip", full, primary, []stun.Setter{changeRequest(0x04)}, false, netip.AddrPortFrom(ip2, p1), netip.AddrPortFrom(ip2, p2), 0},
		{"change both from the other socket", full, netip.AddrPortFrom(ip2, p2), []stun.Setter{changeRequest(0x06)}, false, primary, primary, 0},
		{"zero change request", full, primary, []stun.Setter{changeRequest(0)}, false, primary, netip.AddrPortFrom(ip2, p2), 0},
		{"single ip: no OTHER-ADDRESS", Addrs{Primary: primary}, primary, nil, false, primary, netip.AddrPort{}, 0},
		{"single ip: change ip refused", Addrs{Primary: primary}, primary, []stun.Setter{changeRequest(0x04)}, false, primary, netip.AddrPort{}, stun.CodeUnknownAttribute},
		{"alt port only: change port works", Addrs{Primary: primary, AltPort: p2}, primary, []stun.Setter{changeRequest(0x02)}, false, netip.AddrPortFrom(ip1, p2), netip.AddrPort{}, 0},
		{"alt port only: change ip refused", Addrs{Primary: primary, AltPort: p2}, primary, []stun.Setter{changeRequest(0x06)}, false, primary, netip.AddrPort{}, stun.CodeUnknownAttribute},
		{"unknown comprehension-required", full, primary, []stun.Setter{rawAttr{0x7777, []byte{1, 2, 3, 4}}}, false, primary, netip.AddrPort{}, stun.CodeUnknownAttribute},
		{"unknown optional is ignored", full, primary, []stun.Setter{rawAttr{0xC777, []byte{1}}}, false, primary, netip.AddrPortFrom(ip2, p2), 0},
		{"tcp: no OTHER-ADDRESS", full, primary, nil, true, primary, netip.AddrPort{}, 0},
		{"tcp: change request refused", full, primary, []stun.Setter{changeRequest(0x06)}, true, primary, netip.AddrPort{}, stun.CodeUnknownAttribute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := NewHandler(tt.addrs, "test")
			req := bindingRequest(t, tt.setters...)
			var rep Reply
			if tt.stream {
				rep = h.HandleStream(req, client, tt.local)
			} else {
				rep = h.Handle(req, client, tt.local)
			}
			if rep.Raw == nil {
				t.Fatal("no response")
			}
			m := decode(t, rep.Raw)
			if err := stun.Fingerprint.Check(m); err != nil {
				t.Errorf("fingerprint: %v", err)
			}
			if string(m.TransactionID[:]) != string(req[8:20]) {
				t.Error("transaction ID not echoed")
			}
			if rep.From != tt.wantFrom || rep.To != client {
				t.Errorf("from %s to %s, want from %s to %s", rep.From, rep.To, tt.wantFrom, client)
			}
			if tt.wantCode != 0 {
				var ec stun.ErrorCodeAttribute
				if err := ec.GetFrom(m); err != nil || ec.Code != tt.wantCode || !rep.Error {
					t.Errorf("error code %v (%v), Error=%v; want %d", ec.Code, err, rep.Error, tt.wantCode)
				}
				return
			}
			if m.Type != stun.BindingSuccess || rep.Error {
				t.Fatalf("type %v, want binding success", m.Type)
			}
			var x stun.XORMappedAddress
			if err := x.GetFrom(m); err != nil || x.Port != int(client.Port()) || !x.IP.Equal(client.Addr().AsSlice()) {
				t.Errorf("XOR-MAPPED-ADDRESS %v (%v), want %s", x, err, client)
			}
			if got := addrOf(t, m, stun.AttrMappedAddress); got != client {
				t.Errorf("MAPPED-ADDRESS %s, want %s", got, client)
			}
			if got := addrOf(t, m, stun.AttrResponseOrigin); got != tt.wantFrom {
				t.Errorf("RESPONSE-ORIGIN %s, want %s", got, tt.wantFrom)
			}
			if got := addrOf(t, m, stun.AttrSourceAddress); got != tt.wantFrom {
				t.Errorf("SOURCE-ADDRESS %s, want %s", got, tt.wantFrom)
			}
			if got := addrOf(t, m, stun.AttrOtherAddress); got != tt.wantOther {
				t.Errorf("OTHER-ADDRESS %s, want %s", got, tt.wantOther)
			}
			if got := addrOf(t, m, stun.AttrChangedAddress); got != tt.wantOther {
				t.Errorf("CHANGED-ADDRESS %s, want %s", got, tt.wantOther)
			}
			var sw stun.Software
			if err := sw.GetFrom(m); err != nil || sw.String() != "test" {
				t.Errorf("SOFTWARE %q (%v)", sw, err)
			}
		})
	}
}

func TestHandleResponsePort(t *testing.T) {
	h := NewHandler(full, "")
	req := bindingRequest(t, rawAttr{stun.AttrResponsePort, []byte{0x12, 0x34, 0, 0}})
	rep := h.Handle(req, client, primary)
	if want := netip.AddrPortFrom(client.Addr(), 0x1234); rep.To != want || rep.Error {
		t.Fatalf("to %s error %v, want %s", rep.To, rep.Error, want)
	}
	// Over TCP there is only the connection to answer on.
	if rep := h.HandleStream(req, client, primary); !rep.Error || rep.To != client {
		t.Fatalf("tcp: to %s error %v, want a 420 to %s", rep.To, rep.Error, client)
	}
}

// TestHandleClassic checks the RFC 3489 form: no magic cookie, 128-bit
// transaction ID echoed whole, no attributes a classic client rejects.
func TestHandleClassic(t *testing.T) {
	req := make([]byte, 28)
	binary.BigEndian.PutUint16(req[0:2], 0x0001)
	binary.BigEndian.PutUint16(req[2:4], 8)
	for i := 4; i < 20; i++ {
		req[i] = byte(i * 7)
	}
	binary.BigEndian.PutUint16(req[20:22], uint16(stun.AttrChangeRequest))
	binary.BigEndian.PutUint16(req[22:24], 4)
	req[27] = 0x06
	rep := NewHandler(full, "natlab").Handle(req, client, primary)
	if rep.Raw == nil {
		t.Fatal("no answer to a classic request")
	}
	if string(rep.Raw[4:20]) != string(req[4:20]) {
		t.Error("transaction ID not echoed in full")
	}
	if rep.From != netip.AddrPortFrom(ip2, p2) {
		t.Errorf("from %s, want the changed address", rep.From)
	}
	for off := headerSize; off+4 <= len(rep.Raw); {
		at := binary.BigEndian.Uint16(rep.Raw[off:])
		al := int(binary.BigEndian.Uint16(rep.Raw[off+2:]))
		if at < 0x8000 && at != 0x0001 && at != 0x0004 && at != 0x0005 {
			t.Errorf("attribute %#04x would make a classic client reject the response", at)
		}
		if at == uint16(stun.AttrSoftware) && al%4 != 0 {
			t.Errorf("SERVER-NAME length %d is not a multiple of 4", al)
		}
		off += 4 + (al+3)&^3
	}
}

func TestHandleIgnores(t *testing.T) {
	h := NewHandler(full, "natlab")
	resp, _ := stun.Build(stun.TransactionID, stun.BindingSuccess)
	ind, _ := stun.Build(stun.TransactionID, stun.NewType(stun.MethodBinding, stun.ClassIndication))
	badFP := bindingRequest(t, stun.Fingerprint)
	badFP[len(badFP)-1] ^= 0xff
	short := bindingRequest(t)[:19]
	truncated := bindingRequest(t, rawAttr{0x8022, []byte("abcdefgh")})
	binary.BigEndian.PutUint16(truncated[22:24], 200)
	tests := map[string][]byte{
		"empty":              nil,
		"short":              short,
		"dns-like":           []byte("\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x03www\x07example\x03com\x00\x00\x01\x00\x01"),
		"response":           resp.Raw,
		"indication":         ind.Raw,
		"bad fingerprint":    badFP,
		"attribute overruns": truncated,
		"length mismatch":    append(bindingRequest(t), 0, 0, 0, 0),
		"rtp":                {0x80, 0x60, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0},
	}
	for name, b := range tests {
		if rep := h.Handle(b, client, primary); rep.Raw != nil {
			t.Errorf("%s: answered %x", name, rep.Raw)
		}
	}
}

func TestAddrsUnsupported(t *testing.T) {
	if u := full.Unsupported(); len(u) != 0 {
		t.Errorf("full plan: %v", u)
	}
	if u := (Addrs{Primary: primary}).Unsupported(); len(u) == 0 {
		t.Error("single address: nothing unsupported")
	}
	if got := len(full.Sockets()); got != 4 {
		t.Errorf("full plan has %d sockets, want 4", got)
	}
}

func FuzzHandle(f *testing.F) {
	f.Add(bindingRequest(f))
	f.Add(bindingRequest(f, changeRequest(0x06), stun.Fingerprint))
	f.Add(bindingRequest(f, rawAttr{stun.AttrResponsePort, []byte{1, 2, 0, 0}}))
	f.Add([]byte("not stun at all, not at all"))
	h := NewHandler(full, "natlab")
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, rep := range []Reply{h.Handle(b, client, primary), h.HandleStream(b, client, primary)} {
			if rep.Raw == nil {
				continue
			}
			// An answer means the input was a well-framed STUN request.
			if len(b) < headerSize || b[0]&0xC0 != 0 || int(binary.BigEndian.Uint16(b[2:4]))+headerSize != len(b) ||
				binary.BigEndian.Uint16(b[0:2])&0x0110 != 0 {
				t.Fatalf("answered non-STUN input %x", b)
			}
			if string(rep.Raw[8:20]) != string(b[8:20]) {
				t.Fatal("answer does not echo the transaction ID")
			}
			if !full.has(rep.From) {
				t.Fatalf("answer from %s, not a socket of the plan", rep.From)
			}
		}
	})
}

func BenchmarkHandle(b *testing.B) {
	h := NewHandler(full, "natlab")
	req := bindingRequest(b, stun.Fingerprint)
	b.ReportAllocs()
	for b.Loop() {
		if rep := h.Handle(req, client, primary); rep.Raw == nil {
			b.Fatal("no answer")
		}
	}
}
