// Command backend serves several plain-HTTP backends from one process, for
// the throughput benchmark in bench/throughput.
//
// Each port listens on 127.0.0.1 only, keeps connections alive (net/http's
// default) and answers every request with 200 and a fixed body that names the
// backend, e.g. "backend-2 127.0.0.1:9102 xxxx...\n", padded to -body-bytes.
// The backend's name is also sent in the X-Backend header.
//
//	go run ./bench/throughput/backend -ports 9101,9102,9103,9104 -body-bytes 100
package main

import (
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
)

func main() {
	ports := flag.String("ports", "9101,9102,9103,9104", "comma-separated loopback ports, one backend per port")
	bodyBytes := flag.Int("body-bytes", 100, "response body size in bytes (at least the backend's label)")
	flag.Parse()

	var lns []net.Listener
	var names []string
	for i, p := range strings.Split(*ports, ",") {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		addr := net.JoinHostPort("127.0.0.1", p)
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			log.Fatalf("backend: %v", err)
		}
		lns = append(lns, ln)
		names = append(names, fmt.Sprintf("backend-%d", i+1))
	}
	if len(lns) == 0 {
		log.Fatal("backend: no ports given")
	}

	errc := make(chan error, len(lns))
	for i, ln := range lns {
		srv := &http.Server{
			Handler:           handler(names[i], ln.Addr().String(), *bodyBytes),
			ReadHeaderTimeout: 10 * time.Second,
			IdleTimeout:       2 * time.Minute,
		}
		log.Printf("backend: %s listening on %s", names[i], ln.Addr())
		go func(ln net.Listener) { errc <- srv.Serve(ln) }(ln)
	}
	log.Fatalf("backend: %v", <-errc)
}

// handler returns a handler that answers 200 with a precomputed body.
func handler(name, addr string, size int) http.Handler {
	body := []byte(name + " " + addr + " ")
	for len(body) < size-1 {
		body = append(body, 'x')
	}
	if len(body) < size {
		body = append(body, '\n')
	}
	clen := []string{strconv.Itoa(len(body))}
	ctype := []string{"text/plain; charset=utf-8"}
	xb := []string{name}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h["Content-Type"] = ctype
		h["Content-Length"] = clen
		h["X-Backend"] = xb
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(body)
	})
}
