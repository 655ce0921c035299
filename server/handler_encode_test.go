package server

import (
	"bytes"
	"net/netip"
	"testing"

	"github.com/pion/stun/v3"
)

// pionSuccess is how the success response was built with pion/stun
// before appendSuccess encoded it by hand; the two must agree byte for byte.
func pionSuccess(t *testing.T, h *Handler, req request, from, src, local netip.AddrPort, stream bool) []byte {
	t.Helper()
	m := newResponse(req, stun.BindingSuccess)
	ip := from.Addr().AsSlice()
	var setters []stun.Setter
	if !req.classic {
		setters = append(setters, &stun.XORMappedAddress{IP: ip, Port: int(from.Port())})
	}
	setters = append(setters, &stun.MappedAddress{IP: ip, Port: int(from.Port())})
	as := func(ap netip.AddrPort, at stun.AttrType) stun.Setter {
		return setterFunc(func(m *stun.Message) error {
			a := stun.MappedAddress{IP: ap.Addr().Unmap().AsSlice(), Port: int(ap.Port())}
			return a.AddToAs(m, at)
		})
	}
	if src.Addr().IsValid() && !src.Addr().IsUnspecified() {
		setters = append(setters, as(src, stun.AttrSourceAddress), as(src, stun.AttrResponseOrigin))
	}
	if other, ok := h.addrs.other(local); ok && !stream {
		setters = append(setters, as(other, stun.AttrChangedAddress), as(other, stun.AttrOtherAddress))
	}
	if h.software != "" {
		sw := h.software
		if req.classic {
			for len(sw)%4 != 0 {
				sw += " "
			}
		}
		setters = append(setters, stun.NewSoftware(sw))
	}
	if err := m.Build(setters...); err != nil {
		t.Fatal(err)
	}
	return finish(m, req)
}

type setterFunc func(*stun.Message) error

func (f setterFunc) AddTo(m *stun.Message) error { return f(m) }

func TestAppendSuccessMatchesPion(t *testing.T) {
	v6 := Addrs{Primary: netip.MustParseAddrPort("[2001:db8::1]:3478"), AltIP: netip.MustParseAddr("2001:db8::2"), AltPort: 3479}
	plans := []Addrs{full, {Primary: primary}, v6}
	froms := []netip.AddrPort{client, netip.MustParseAddrPort("[2001:db8::77]:5000"), netip.MustParseAddrPort("10.1.2.3:1")}
	for _, plan := range plans {
		for _, sw := range []string{"", "natlab", "abcd", "x"} {
			h := NewHandler(plan, sw)
			for _, local := range plan.Sockets() {
				for _, from := range froms {
					for _, classic := range []bool{false, true} {
						for _, stream := range []bool{false, true} {
							for _, src := range []netip.AddrPort{local, {}, netip.AddrPortFrom(netip.IPv4Unspecified(), 1)} {
								req := request{classic: classic}
								copy(req.txid[:], "0123456789abcdef")
								if !classic {
									copy(req.txid[:4], []byte{0x21, 0x12, 0xA4, 0x42})
								}
								got, ok := h.appendSuccess(nil, req, from, src, local, stream)
								if !ok {
									t.Fatal("not encoded")
								}
								want := pionSuccess(t, h, req, from, src, local, stream)
								if !bytes.Equal(got, want) {
									t.Fatalf("plan %v sw %q local %v from %v classic %v stream %v src %v:\n got %x\nwant %x",
										plan, sw, local, from, classic, stream, src, got, want)
								}
							}
						}
					}
				}
			}
		}
	}
}
