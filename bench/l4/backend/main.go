// Command backend is the real server of the L4 benchmark: a plain HTTP
// server that answers every request with its name, run inside a real
// server's network namespace.
//
//	backend -listen :80 -name r1
package main

import (
	"flag"
	"log"
	"net/http"
	"time"
)

func main() {
	listen := flag.String("listen", ":80", "address to listen on")
	name := flag.String("name", "backend", "name to answer with")
	flag.Parse()
	body := []byte(*name + "\n")
	srv := &http.Server{
		Addr:              *listen,
		ReadHeaderTimeout: 5 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			w.Write(body)
		}),
	}
	log.Fatal(srv.ListenAndServe())
}
