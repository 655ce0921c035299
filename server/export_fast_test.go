package server

import "time"

// FastRoutes reports the ChannelData fast path's live routes and the
// datagrams it relayed, for tests.
func FastRoutes(s *Server) (routes int, relayed uint64) {
	t := s.turn
	t.mu.Lock()
	defer t.mu.Unlock()
	now := time.Now().UnixNano()
	for _, rs := range t.routes {
		for _, r := range rs {
			if r.live(now) {
				routes++
			}
		}
	}
	return routes, t.fastRelayed.Load()
}

// ExpireFastRoutes ages every route past its lifetime, as five minutes
// without a ChannelBind refresh would.
func ExpireFastRoutes(s *Server) {
	t := s.turn
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, rs := range t.routes {
		for _, r := range rs {
			r.expires.Store(time.Now().Add(-time.Second).UnixNano())
		}
	}
}

// FastRouteCount counts routes, live or expired, and allocations known
// to the fast path.
func FastRouteCount(s *Server) int {
	t := s.turn
	t.mu.Lock()
	defer t.mu.Unlock()
	n := len(t.tuples)
	for _, rs := range t.routes {
		n += len(rs)
	}
	return n
}
