// Package metrics exposes natlab's measurements to Prometheus: a probe's
// rounds (natlab probe --interval --metrics) and a server's counters
// (natlab serve --metrics). It reads reports and Stats snapshots only; it
// opens no sockets except the HTTP listener it is asked for.
package metrics

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// HTTP timeouts, each with why.
const (
	// readHeaderTimeout bounds a scraper's request headers: Prometheus
	// sends them at once, and a slow client must not hold a goroutine.
	readHeaderTimeout = 5 * time.Second
	// shutdownTimeout lets a scrape in flight finish when natlab stops.
	shutdownTimeout = 2 * time.Second
)

// NewRegistry is a registry with the process and Go runtime collectors,
// which every exporter is expected to have.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// Server serves /metrics over HTTP.
type Server struct {
	ln   net.Listener
	srv  *http.Server
	done chan error
}

// Listen serves g's metrics on addr (host:port; port 0 picks one) at
// /metrics, until Close.
func Listen(addr string, g prometheus.Gatherer) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{}))
	s := &Server{ln: ln, srv: &http.Server{Handler: mux, ReadHeaderTimeout: readHeaderTimeout}, done: make(chan error, 1)}
	go func() { s.done <- s.srv.Serve(ln) }()
	return s, nil
}

// Addr is the address the metrics are served on.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// URL is the scrape URL.
func (s *Server) URL() string { return "http://" + s.ln.Addr().String() + "/metrics" }

// Close stops serving, letting a scrape in flight finish.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	err := s.srv.Shutdown(ctx)
	if serr := <-s.done; !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	return err
}
