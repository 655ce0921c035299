package portmap

// UPnP-IGD: an SSDP M-SEARCH (multicast, and unicast to the gateway), an
// HTTP GET of the device description it points at, and SOAP calls to the
// WANIPConnection (or WANPPPConnection) service.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/pion/transport/v4"
)

const (
	// ssdpPort and ssdpGroup are SSDP's well-known endpoint.
	ssdpPort = 1900
	// ssdpResend is when the M-SEARCH is sent again: one lost datagram
	// must not read as "no UPnP", and a LAN answers well within it.
	ssdpResend = 300 * time.Millisecond
	// httpDialTimeout bounds the TCP connect to the gateway's HTTP server,
	// on the LAN a few milliseconds; the dialers of a transport.Net take
	// no context, so this is what stops a dead gateway.
	httpDialTimeout = time.Second
	// maxBody bounds what is read from a description or SOAP response: a
	// real IGD description is a few kilobytes.
	maxBody = 1 << 20
	// upnpDescription is sent as NewPortMappingDescription, so a person
	// looking at the router's table knows who made the mapping.
	upnpDescription = "natlab"
)

var ssdpGroup = netip.AddrPortFrom(netip.MustParseAddr("239.255.255.250"), ssdpPort)

// UPnP SOAP error codes that change what Map does.
const (
	upnpErrArrayIndexInvalid = 713 // GetGenericPortMappingEntry past the end
	upnpErrNoSuchEntry       = 714
	upnpErrConflict          = 718 // the external port is taken
	upnpErrOnlyPermanent     = 725 // an IGDv1 that cannot lease
)

// UPnPError is a SOAP fault from the gateway.
type UPnPError struct {
	Action      string
	Code        int
	Description string
}

func (e *UPnPError) Error() string {
	return fmt.Sprintf("upnp %s: error %d (%s)", e.Action, e.Code, e.Description)
}

// igdService is a discovered WANIPConnection or WANPPPConnection service.
type igdService struct {
	location    string // the description URL from SSDP
	serviceType string
	controlURL  string
}

// discover finds the gateway's IGD service once and caches it.
func (c *Client) discover(ctx context.Context) (*igdService, error) {
	c.mu.Lock()
	s := c.igd
	c.mu.Unlock()
	if s != nil {
		return s, nil
	}
	loc, err := c.ssdpSearch(ctx)
	if err != nil {
		return nil, err
	}
	s, err = fetchService(ctx, c.net, loc)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.igd = s
	c.mu.Unlock()
	return s, nil
}

// ssdpSearch sends M-SEARCH for an InternetGatewayDevice and returns the
// LOCATION of the first answer from the gateway. Multicast is how UPnP is
// meant to be found; unicast to the gateway also works with most IGDs
// (miniupnpd among them), needs no multicast route, and goes out on a
// connected socket, so a gateway without SSDP says so at once with ICMP
// port unreachable (errRefused).
func (c *Client) ssdpSearch(ctx context.Context) (string, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	req := []byte("M-SEARCH * HTTP/1.1\r\n" +
		"HOST: 239.255.255.250:1900\r\n" +
		"MAN: \"ssdp:discover\"\r\n" +
		"MX: 1\r\n" +
		"ST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n\r\n")
	uc, err := c.net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(c.gw, ssdpPort)))
	if err != nil {
		return "", fmt.Errorf("ssdp: open socket: %w", err)
	}
	mc, err := c.net.ListenPacket("udp4", "0.0.0.0:0")
	if err != nil {
		_ = uc.Close()
		return "", fmt.Errorf("ssdp: open socket: %w", err)
	}
	type result struct {
		loc string
		err error
	}
	results := make(chan result, 2)
	group := net.UDPAddrFromAddrPort(ssdpGroup)
	go func() {
		loc, err := c.ssdpListen(ctx, uc, func() error { _, err := uc.Write(req); return err })
		results <- result{loc, err}
	}()
	go func() {
		loc, err := c.ssdpListen(ctx, mc, func() error { _, err := mc.WriteTo(req, group); return err })
		results <- result{loc, err}
	}()
	var errs []error
	for i := range 2 {
		r := <-results
		if r.err == nil || errors.Is(r.err, errRefused) {
			// An answer, or the gateway's own word that nothing listens:
			// either settles it, and the other search ends (unless it
			// already has: its result was the first).
			cancel()
			if i == 0 {
				<-results
			}
			return r.loc, r.err
		}
		errs = append(errs, r.err)
	}
	return "", errs[0] // both failed alike (silence, or no socket): the first reason
}

// ssdpListen sends M-SEARCH with send on conn (closing it when done) and
// reads until the gateway answers with a LOCATION, refuses, or ctx ends.
func (c *Client) ssdpListen(ctx context.Context, conn net.PacketConn, send func() error) (string, error) {
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { _ = conn.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	buf := make([]byte, 2048)
	r := c.resender(ssdpResend)
	for {
		if r.due() {
			if err := send(); err != nil && !isRefused(err) {
				return "", fmt.Errorf("ssdp: send M-SEARCH: %w", err)
			}
		}
		_ = conn.SetReadDeadline(r.next())
		n, from, err := conn.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil {
				return "", fmt.Errorf("ssdp: %w from %v: %w", errSilent, c.gw, context.Cause(ctx))
			}
			var ne net.Error
			switch {
			case isRefused(err):
				return "", fmt.Errorf("ssdp: %w from %v", errRefused, netip.AddrPortFrom(c.gw, ssdpPort))
			case errors.As(err, &ne) && ne.Timeout():
				continue
			}
			return "", fmt.Errorf("ssdp: read: %w", err)
		}
		if ua, ok := from.(*net.UDPAddr); !ok || ua.AddrPort().Addr().Unmap() != c.gw {
			continue // another device on the LAN
		}
		resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(buf[:n])), nil)
		if err != nil {
			continue
		}
		_ = resp.Body.Close()
		loc := resp.Header.Get("Location")
		if resp.StatusCode == http.StatusOK && loc != "" {
			return loc, nil
		}
	}
}

// httpClient makes HTTP requests through n, one connection per request so
// that nothing stays open afterwards.
func httpClient(n transport.Net) *http.Client {
	d := n.CreateDialer(&net.Dialer{Timeout: httpDialTimeout})
	return &http.Client{Transport: &http.Transport{
		DialContext: func(_ context.Context, network, addr string) (net.Conn, error) {
			return d.Dial(network, addr)
		},
		DisableKeepAlives: true,
	}}
}

// description is the part of an IGD description natlab needs.
type description struct {
	URLBase string `xml:"URLBase"`
	Device  device `xml:"device"`
}

type device struct {
	DeviceType string    `xml:"deviceType"`
	Services   []service `xml:"serviceList>service"`
	Devices    []device  `xml:"deviceList>device"`
}

type service struct {
	ServiceType string `xml:"serviceType"`
	ControlURL  string `xml:"controlURL"`
}

// findService returns the first WANIPConnection (preferred) or
// WANPPPConnection service in the device tree.
func (d device) findService() (service, bool) {
	var ppp *service
	var walk func(d device) (service, bool)
	walk = func(d device) (service, bool) {
		for _, s := range d.Services {
			switch {
			case strings.HasPrefix(s.ServiceType, "urn:schemas-upnp-org:service:WANIPConnection:"):
				return s, true
			case strings.HasPrefix(s.ServiceType, "urn:schemas-upnp-org:service:WANPPPConnection:") && ppp == nil:
				s := s
				ppp = &s
			}
		}
		for _, sub := range d.Devices {
			if s, ok := walk(sub); ok {
				return s, true
			}
		}
		return service{}, false
	}
	if s, ok := walk(d); ok {
		return s, true
	}
	if ppp != nil {
		return *ppp, true
	}
	return service{}, false
}

// fetchService reads the description at loc and finds the WAN connection
// service.
func fetchService(ctx context.Context, n transport.Net, loc string) (*igdService, error) {
	base, err := url.Parse(loc)
	if err != nil || (base.Scheme != "http" && base.Scheme != "https") {
		return nil, fmt.Errorf("upnp: bad description URL %q", loc)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, loc, nil)
	if err != nil {
		return nil, fmt.Errorf("upnp: %w", err)
	}
	resp, err := httpClient(n).Do(req)
	if err != nil {
		return nil, fmt.Errorf("upnp: get description: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("upnp: get description %s: %s", loc, resp.Status)
	}
	var d description
	if err := xml.NewDecoder(io.LimitReader(resp.Body, maxBody)).Decode(&d); err != nil {
		return nil, fmt.Errorf("upnp: parse description %s: %w", loc, err)
	}
	s, ok := d.Device.findService()
	if !ok {
		return nil, fmt.Errorf("upnp: %s has no WANIPConnection or WANPPPConnection service", loc)
	}
	if d.URLBase != "" {
		if b, err := url.Parse(d.URLBase); err == nil {
			base = b
		}
	}
	ctl, err := base.Parse(s.ControlURL)
	if err != nil {
		return nil, fmt.Errorf("upnp: bad control URL %q", s.ControlURL)
	}
	return &igdService{location: loc, serviceType: s.ServiceType, controlURL: ctl.String()}, nil
}

// call invokes a SOAP action with ordered arguments and returns the
// response's leaf elements by local name.
func (s *igdService) call(ctx context.Context, n transport.Net, action string, args ...[2]string) (map[string]string, error) {
	var body bytes.Buffer
	body.WriteString(`<?xml version="1.0"?>` +
		`<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" s:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/"><s:Body>`)
	fmt.Fprintf(&body, `<u:%s xmlns:u="%s">`, action, s.serviceType)
	for _, a := range args {
		fmt.Fprintf(&body, "<%s>", a[0])
		_ = xml.EscapeText(&body, []byte(a[1]))
		fmt.Fprintf(&body, "</%s>", a[0])
	}
	fmt.Fprintf(&body, `</u:%s></s:Body></s:Envelope>`, action)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.controlURL, &body)
	if err != nil {
		return nil, fmt.Errorf("upnp %s: %w", action, err)
	}
	req.Header.Set("Content-Type", `text/xml; charset="utf-8"`)
	req.Header.Set("SOAPAction", `"`+s.serviceType+"#"+action+`"`)
	resp, err := httpClient(n).Do(req)
	if err != nil {
		return nil, fmt.Errorf("upnp %s: %w", action, err)
	}
	defer resp.Body.Close()
	out, perr := leaves(io.LimitReader(resp.Body, maxBody))
	if resp.StatusCode != http.StatusOK {
		code, _ := strconv.Atoi(out["errorCode"])
		if code == 0 {
			return nil, fmt.Errorf("upnp %s: %s", action, resp.Status)
		}
		return nil, &UPnPError{Action: action, Code: code, Description: out["errorDescription"]}
	}
	if perr != nil {
		return nil, fmt.Errorf("upnp %s: parse response: %w", action, perr)
	}
	return out, nil
}

// leaves maps each element's local name to its text.
func leaves(r io.Reader) (map[string]string, error) {
	out := map[string]string{}
	dec := xml.NewDecoder(r)
	var text strings.Builder
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		switch t := tok.(type) {
		case xml.StartElement:
			text.Reset()
		case xml.CharData:
			text.Write(t)
		case xml.EndElement:
			if _, seen := out[t.Name.Local]; !seen {
				out[t.Name.Local] = strings.TrimSpace(text.String())
			}
			text.Reset()
		}
	}
}

func (s *igdService) externalIP(ctx context.Context, n transport.Net) (netip.Addr, error) {
	out, err := s.call(ctx, n, "GetExternalIPAddress")
	if err != nil {
		return netip.Addr{}, err
	}
	a, err := netip.ParseAddr(out["NewExternalIPAddress"])
	if err != nil || a.IsUnspecified() {
		return netip.Addr{}, fmt.Errorf("upnp: gateway has no external address (%q)", out["NewExternalIPAddress"])
	}
	return a, nil
}

func (s *igdService) addPortMapping(ctx context.Context, n transport.Net, m *Mapping, local netip.Addr, internal uint16, secs uint32) error {
	ext, err := s.externalIP(ctx, n)
	if err != nil {
		return err
	}
	args := func(action string, port uint16, secs uint32) error {
		a := [][2]string{
			{"NewRemoteHost", ""}, {"NewExternalPort", strconv.Itoa(int(port))}, {"NewProtocol", "UDP"},
			{"NewInternalPort", strconv.Itoa(int(internal))}, {"NewInternalClient", local.String()},
			{"NewEnabled", "1"}, {"NewPortMappingDescription", upnpDescription},
			{"NewLeaseDuration", strconv.FormatUint(uint64(secs), 10)},
		}
		out, err := s.call(ctx, n, action, a...)
		if err != nil {
			return err
		}
		if action == "AddAnyPortMapping" {
			p, perr := strconv.ParseUint(out["NewReservedPort"], 10, 16)
			if perr != nil || p == 0 {
				return fmt.Errorf("upnp AddAnyPortMapping: bad NewReservedPort %q", out["NewReservedPort"])
			}
			port = uint16(p)
		}
		m.External = netip.AddrPortFrom(ext, port)
		m.Lifetime = time.Duration(secs) * time.Second
		return nil
	}
	err = args("AddPortMapping", internal, secs)
	var ue *UPnPError
	switch {
	case errors.As(err, &ue) && ue.Code == upnpErrOnlyPermanent:
		// An IGDv1 that cannot lease: map permanently; the caller
		// deletes it.
		err = args("AddPortMapping", internal, 0)
	case errors.As(err, &ue) && ue.Code == upnpErrConflict && strings.HasSuffix(s.serviceType, ":2"):
		err = args("AddAnyPortMapping", internal, secs)
	}
	return err
}

func (s *igdService) deletePortMapping(ctx context.Context, n transport.Net, ext uint16) error {
	_, err := s.call(ctx, n, "DeletePortMapping",
		[2]string{"NewRemoteHost", ""}, [2]string{"NewExternalPort", strconv.Itoa(int(ext))}, [2]string{"NewProtocol", "UDP"})
	return err
}

// UPnPEntry is one row of the gateway's port-mapping table.
type UPnPEntry struct {
	External    uint16
	Protocol    string // "UDP" or "TCP"
	Internal    netip.AddrPort
	Description string
	Lease       time.Duration
}

// maxEntries bounds the table walk of UPnPEntries.
const maxEntries = 1024

// UPnPEntries lists the gateway's port mappings with
// GetGenericPortMappingEntry. miniupnpd lists the mappings made over
// NAT-PMP and PCP there too, so this shows what any protocol left behind.
func (c *Client) UPnPEntries(ctx context.Context) ([]UPnPEntry, error) {
	ctx, cancel := context.WithTimeout(ctx, DefaultMapTimeout)
	defer cancel()
	s, err := c.discover(ctx)
	if err != nil {
		return nil, err
	}
	var out []UPnPEntry
	for i := range maxEntries {
		r, err := s.call(ctx, c.net, "GetGenericPortMappingEntry", [2]string{"NewPortMappingIndex", strconv.Itoa(i)})
		var ue *UPnPError
		if errors.As(err, &ue) && (ue.Code == upnpErrArrayIndexInvalid || ue.Code == upnpErrNoSuchEntry) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		ep, _ := strconv.ParseUint(r["NewExternalPort"], 10, 16)
		ip, _ := strconv.ParseUint(r["NewInternalPort"], 10, 16)
		ia, _ := netip.ParseAddr(r["NewInternalClient"])
		lease, _ := strconv.ParseUint(r["NewLeaseDuration"], 10, 32)
		out = append(out, UPnPEntry{External: uint16(ep), Protocol: r["NewProtocol"], Internal: netip.AddrPortFrom(ia, uint16(ip)),
			Description: r["NewPortMappingDescription"], Lease: time.Duration(lease) * time.Second})
	}
	return out, nil
}
