// Command backend serves backends of unequal capacity from one process, for
// the balancing-quality benchmark in bench/balance.
//
// Backend i listens on 127.0.0.1 at the i-th of -ports. Each request holds
// one of the backend's -limit slots for the backend's service time (the
// i-th of -service) and then answers 200 with a body that names the
// backend, "backend-2 127.0.0.1:9302 5ms xxx...\n", padded to -body-bytes.
// Requests beyond -limit wait for a slot, so a backend's capacity is
// limit ÷ service time (8 slots at 2, 5, 10, 20 ms: 4000, 1600, 800 and
// 400 req/s) and a proxy that sends it more builds a queue there.
//
// GET /_stats on any port answers, without waiting for a slot, one line per
// backend with cumulative counters: "backend-N served wait_ns resident_ns
// inflight conns". wait_ns is the time requests spent waiting for a slot,
// resident_ns their whole time in the handler, and conns the connections
// accepted. The difference of two samples over the wall time between them
// is the mean queue length and the mean number of requests present
// (Little's law); conns per request shows whether the proxy reuses its
// connections.
//
//	go run ./bench/balance/backend -ports 9301,9302,9303,9304 -service 2ms,5ms,10ms,20ms -limit 8
package main

import (
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// backend is one listener's capacity model and counters. It holds atomics:
// use it by pointer.
type backend struct {
	name    string
	service time.Duration
	slots   chan struct{} // nil: unlimited
	body    []byte

	served   atomic.Int64
	waitNs   atomic.Int64
	residNs  atomic.Int64
	inflight atomic.Int64
	conns    atomic.Int64
}

func main() {
	ports := flag.String("ports", "9301,9302,9303,9304", "comma-separated loopback ports, one backend per port")
	service := flag.String("service", "2ms,5ms,10ms,20ms", "comma-separated service times, one per port (a single value applies to all)")
	limit := flag.Int("limit", 8, "requests each backend serves at once; more wait for a slot (0 = unlimited)")
	bodyBytes := flag.Int("body-bytes", 100, "response body size in bytes (at least the backend's label)")
	flag.Parse()

	var ps []string
	for _, p := range strings.Split(*ports, ",") {
		if p = strings.TrimSpace(p); p != "" {
			ps = append(ps, p)
		}
	}
	if len(ps) == 0 {
		log.Fatal("backend: no ports given")
	}
	ds, err := parseDurations(*service, len(ps))
	if err != nil {
		log.Fatalf("backend: -service: %v", err)
	}
	if *limit < 0 {
		log.Fatalf("backend: -limit must be >= 0, not %d", *limit)
	}

	var bs []*backend
	var lns []net.Listener
	for i, p := range ps {
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", p))
		if err != nil {
			log.Fatalf("backend: %v", err)
		}
		b := &backend{name: fmt.Sprintf("backend-%d", i+1), service: ds[i]}
		if *limit > 0 {
			b.slots = make(chan struct{}, *limit)
		}
		b.body = label(b.name+" "+ln.Addr().String()+" "+ds[i].String()+" ", *bodyBytes)
		bs = append(bs, b)
		lns = append(lns, ln)
	}

	errc := make(chan error, len(lns))
	for i, ln := range lns {
		mux := http.NewServeMux()
		mux.Handle("/", bs[i])
		mux.HandleFunc("/_stats", func(w http.ResponseWriter, _ *http.Request) { writeStats(w, bs) })
		srv := &http.Server{
			Handler:           mux,
			ReadHeaderTimeout: 10 * time.Second,
			IdleTimeout:       2 * time.Minute,
			ConnState:         bs[i].countConn,
		}
		log.Printf("backend: %s on %s, service %v, limit %d", bs[i].name, ln.Addr(), bs[i].service, *limit)
		go func(ln net.Listener) { errc <- srv.Serve(ln) }(ln)
	}
	log.Fatalf("backend: %v", <-errc)
}

// parseDurations reads n comma-separated durations; a single one is
// repeated n times.
func parseDurations(s string, n int) ([]time.Duration, error) {
	parts := strings.Split(s, ",")
	if len(parts) != 1 && len(parts) != n {
		return nil, fmt.Errorf("%d values for %d ports", len(parts), n)
	}
	ds := make([]time.Duration, n)
	for i := range ds {
		p := parts[0]
		if len(parts) == n {
			p = parts[i]
		}
		d, err := time.ParseDuration(strings.TrimSpace(p))
		if err != nil {
			return nil, err
		}
		if d < 0 {
			return nil, fmt.Errorf("negative service time %v", d)
		}
		ds[i] = d
	}
	return ds, nil
}

// label pads prefix with 'x' to size bytes, ending in a newline.
func label(prefix string, size int) []byte {
	body := []byte(prefix)
	for len(body) < size-1 {
		body = append(body, 'x')
	}
	return append(body, '\n')
}

// ServeHTTP waits for a slot, holds it for the service time and answers.
// The slot is held by sleeping, not by burning CPU, so the backends cost
// the shared cores little and their capacity does not depend on the
// proxy's CPU use.
func (b *backend) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	start := time.Now()
	b.inflight.Add(1)
	if b.slots != nil {
		b.slots <- struct{}{}
	}
	got := time.Now()
	if b.service > 0 {
		time.Sleep(b.service)
	}
	if b.slots != nil {
		<-b.slots
	}
	end := time.Now()
	b.inflight.Add(-1)
	b.waitNs.Add(int64(got.Sub(start)))
	b.residNs.Add(int64(end.Sub(start)))
	b.served.Add(1)

	h := w.Header()
	h["Content-Type"] = []string{"text/plain; charset=utf-8"}
	h["Content-Length"] = []string{strconv.Itoa(len(b.body))}
	h["X-Backend"] = []string{b.name}
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b.body)
}

// countConn counts the connections the backend accepts.
func (b *backend) countConn(_ net.Conn, s http.ConnState) {
	if s == http.StateNew {
		b.conns.Add(1)
	}
}

// writeStats writes every backend's cumulative counters, one line each.
func writeStats(w http.ResponseWriter, bs []*backend) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	for _, b := range bs {
		fmt.Fprintf(w, "%s %d %d %d %d %d\n", b.name, b.served.Load(), b.waitNs.Load(), b.residNs.Load(), b.inflight.Load(), b.conns.Load())
	}
}
