// Command backend is the real server of the L4 benchmark: a plain HTTP
// server that answers every request with its name.
//
//	backend -listen :80 -name r1               (in the namespace it runs in)
//	backend -listen :80 -in l4b-dr1=r1 -in l4b-dr2=r2
//
// With -in, one process serves every real server named, each on a socket
// opened in that server's namespace and answering with its own name: the
// servers keep their own addresses and network stacks but share one Go
// runtime, as one server reached directly does. Two runtimes on a
// machine's two CPUs would go idle and wake up apart, a cost that machines
// of their own would not charge to each other.
package main

import (
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/sluicelb/sluice/internal/nstest"
)

// servers collects the -in flags: namespace=name.
type servers map[string]string

func (s servers) String() string { return fmt.Sprint(map[string]string(s)) }

func (s servers) Set(v string) error {
	ns, name, ok := strings.Cut(v, "=")
	if !ok || ns == "" || name == "" {
		return fmt.Errorf("%q: want namespace=name", v)
	}
	s[ns] = name
	return nil
}

func main() {
	listen := flag.String("listen", ":80", "address to listen on")
	name := flag.String("name", "backend", "name to answer with, without -in")
	in := servers{}
	flag.Var(in, "in", "serve the real server in namespace=name (repeatable)")
	flag.Parse()

	if len(in) == 0 {
		l, err := net.Listen("tcp", *listen)
		if err != nil {
			log.Fatal(err)
		}
		log.Fatal(serve(l, *name))
	}
	errc := make(chan error, len(in))
	for ns, name := range in {
		var l net.Listener
		err := nstest.In(ns, func() (err error) {
			l, err = net.Listen("tcp", *listen)
			return err
		})
		if err != nil {
			log.Fatalf("%s: %v", ns, err)
		}
		go func() { errc <- serve(l, name) }()
	}
	log.Fatal(<-errc)
}

func serve(l net.Listener, name string) error {
	body := []byte(name + "\n")
	srv := &http.Server{
		ReadHeaderTimeout: 5 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			w.Write(body)
		}),
	}
	return srv.Serve(l)
}
