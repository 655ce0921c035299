package server

import (
	"bufio"
	"crypto/hmac"
	"crypto/sha1" //nolint:gosec // RFC 5389 long-term credentials and the TURN REST API are defined with SHA-1
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// refusedPeers are the ranges a TURN relay must not reach unless the
// operator opens them with PeerPolicy.Allow: relaying into them would let
// anyone on the internet reach the server's own network (the classic TURN
// SSRF hole). The documentation ranges are refused too: on the internet
// they route nowhere, so refusing costs nothing, and the lab, which uses
// them as its public internet, opens them explicitly.
var refusedPeers = []struct {
	prefix netip.Prefix
	why    string
}{
	{netip.MustParsePrefix("0.0.0.0/8"), "this-network address"},
	{netip.MustParsePrefix("10.0.0.0/8"), "private address (RFC 1918)"},
	{netip.MustParsePrefix("100.64.0.0/10"), "carrier-grade NAT address (RFC 6598)"},
	{netip.MustParsePrefix("127.0.0.0/8"), "loopback address"},
	{netip.MustParsePrefix("169.254.0.0/16"), "link-local address"},
	{netip.MustParsePrefix("172.16.0.0/12"), "private address (RFC 1918)"},
	{netip.MustParsePrefix("192.0.0.0/24"), "IETF protocol assignment"},
	{netip.MustParsePrefix("192.0.2.0/24"), "documentation address (RFC 5737)"},
	{netip.MustParsePrefix("192.168.0.0/16"), "private address (RFC 1918)"},
	{netip.MustParsePrefix("198.18.0.0/15"), "benchmarking address (RFC 2544)"},
	{netip.MustParsePrefix("198.51.100.0/24"), "documentation address (RFC 5737)"},
	{netip.MustParsePrefix("203.0.113.0/24"), "documentation address (RFC 5737)"},
	{netip.MustParsePrefix("224.0.0.0/4"), "multicast address"},
	{netip.MustParsePrefix("240.0.0.0/4"), "reserved or broadcast address"},
	{netip.MustParsePrefix("::/128"), "unspecified address"},
	{netip.MustParsePrefix("::1/128"), "loopback address"},
	{netip.MustParsePrefix("64:ff9b:1::/48"), "local-use NAT64 address"},
	{netip.MustParsePrefix("100::/64"), "discard-only address"},
	{netip.MustParsePrefix("2001:db8::/32"), "documentation address"},
	{netip.MustParsePrefix("fc00::/7"), "unique local address"},
	{netip.MustParsePrefix("fe80::/10"), "link-local address"},
	{netip.MustParsePrefix("ff00::/8"), "multicast address"},
}

// PeerPolicy decides which peer addresses a TURN allocation may relay to.
type PeerPolicy struct {
	// Allow opens prefixes that are refused by default (for the lab:
	// 198.51.100.0/24 and 203.0.113.0/24).
	Allow []netip.Prefix
	// Self are the server's own addresses. A peer on one of them is
	// refused unless it is a live relayed address of this server
	// (relay-to-relay, as ICE's relay–relay candidate pairs need): that
	// keeps the server's own services (STUN, metrics, SSH) out of reach.
	Self []netip.Addr
}

// CheckIP says why a peer IP is refused, or nil. Addresses of the server
// itself pass here; CheckPeer decides them by port.
func (p PeerPolicy) CheckIP(ip netip.Addr) error {
	ip = ip.Unmap()
	if !ip.IsValid() || ip.IsUnspecified() {
		return errors.New("unspecified peer address")
	}
	for _, s := range p.Self {
		if s.Unmap() == ip {
			return nil
		}
	}
	for _, a := range p.Allow {
		if a.Contains(ip) {
			return nil
		}
	}
	for _, r := range refusedPeers {
		if r.prefix.Contains(ip) {
			return fmt.Errorf("peer %s refused: %s (open it with --allow-peer)", ip, r.why)
		}
	}
	return nil
}

// CheckPeer says why a peer transport address is refused, or nil;
// isRelay reports whether an address is one of this server's live
// relayed addresses.
func (p PeerPolicy) CheckPeer(ap netip.AddrPort, isRelay func(netip.AddrPort) bool) error {
	ip := ap.Addr().Unmap()
	for _, s := range p.Self {
		if s.Unmap() == ip {
			if isRelay != nil && isRelay(netip.AddrPortFrom(ip, ap.Port())) {
				return nil
			}
			return fmt.Errorf("peer %s refused: the server's own address, and not one of its relayed addresses", ap)
		}
	}
	return p.CheckIP(ip)
}

// ParseUsers reads a long-term credentials file: one `user:password` per
// line; blank lines and lines starting with '#' are ignored.
func ParseUsers(r io.Reader) (map[string]string, error) {
	users := map[string]string{}
	sc := bufio.NewScanner(r)
	for line := 1; sc.Scan(); line++ {
		s := strings.TrimSpace(sc.Text())
		if s == "" || strings.HasPrefix(s, "#") {
			continue
		}
		u, pw, ok := strings.Cut(s, ":")
		if !ok || u == "" || pw == "" {
			return nil, fmt.Errorf("line %d: want user:password", line)
		}
		if _, dup := users[u]; dup {
			return nil, fmt.Errorf("line %d: user %q defined twice", line, u)
		}
		users[u] = pw
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read users: %w", err)
	}
	return users, nil
}

// EphemeralPassword is the TURN REST API password for username (coturn's
// use-auth-secret): base64(HMAC-SHA1(secret, username)).
func EphemeralPassword(secret, username string) string {
	mac := hmac.New(sha1.New, []byte(secret))
	mac.Write([]byte(username))
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// EphemeralCredentials makes TURN REST API credentials for user valid
// until expiry: username "expiry:user" (Unix seconds), password from
// EphemeralPassword.
func EphemeralCredentials(secret, user string, expiry time.Time) (username, password string) {
	username = strconv.FormatInt(expiry.Unix(), 10)
	if user != "" {
		username += ":" + user
	}
	return username, EphemeralPassword(secret, username)
}

// ephemeralExpiry parses the expiry of a TURN REST API username: the Unix
// time before the first ':' (or the whole name).
func ephemeralExpiry(username string) (time.Time, bool) {
	ts, _, _ := strings.Cut(username, ":")
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || sec <= 0 {
		return time.Time{}, false
	}
	return time.Unix(sec, 0), true
}
