package dashboard

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"time"
)

//go:embed static
var static embed.FS

// Handler serves the page and its assets at /, the live stream at /events and the
// Prometheus metrics at /metrics.
func (h *Hub) Handler() http.Handler {
	mux := http.NewServeMux()
	files, _ := fs.Sub(static, "static")
	mux.Handle("GET /", http.FileServerFS(files))
	mux.HandleFunc("GET /events", h.serveEvents)
	mux.Handle("GET /metrics", h.prom.handler)
	return mux
}

// serveEvents streams the hub as Server-Sent Events: a "snapshot" of everything so far, then
// "update"s as the run records them.
func (h *Hub) serveEvents(w http.ResponseWriter, r *http.Request) {
	rc := http.NewResponseController(w)
	snap, ch, err := h.subscribe()
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	defer h.unsubscribe(ch)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	// A page that fell behind was dropped; it reconnects after a second for a new snapshot.
	fmt.Fprintf(w, "retry: 1000\nevent: snapshot\ndata: %s\n\n", snap)
	if rc.Flush() != nil {
		return
	}
	keepalive := time.NewTicker(15 * time.Second)
	defer keepalive.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case data, ok := <-ch:
			if !ok {
				return
			}
			fmt.Fprintf(w, "event: update\ndata: %s\n\n", data)
		case <-keepalive.C:
			fmt.Fprint(w, ": keepalive\n\n")
		}
		if rc.Flush() != nil {
			return
		}
	}
}

// Server is a hub served on a TCP listener.
type Server struct {
	// URL is where the page is, with the port the listener got.
	URL  string
	srv  *http.Server
	stop func() bool
}

// Start listens on addr (host:port; port 0 picks one) and serves the hub until ctx ends or
// Close.
func Start(ctx context.Context, addr string, h *Hub) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--http %s: %w", addr, err)
	}
	s := &Server{URL: "http://" + ln.Addr().String() + "/",
		srv: &http.Server{Handler: h.Handler(), ReadHeaderTimeout: 10 * time.Second,
			BaseContext: func(net.Listener) context.Context { return ctx }}}
	// Serve only returns once the server is closed, which Close or ctx do.
	go s.srv.Serve(ln) //nolint:errcheck
	s.stop = context.AfterFunc(ctx, func() { s.srv.Close() })
	return s, nil
}

// Close stops serving, ending the streams of open pages.
func (s *Server) Close() error {
	s.stop()
	if err := s.srv.Close(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
