// Command l4fwd is Sluice's layer-4 forwarder: virtual services in NAT and
// direct-routing modes, served by the kernel's nftables. SIGHUP reloads
// the configuration; SIGINT and SIGTERM remove l4fwd's tables and exit.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/sluicelb/sluice/l4fwd"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	reload := make(chan os.Signal, 1)
	signal.Notify(reload, syscall.SIGHUP)
	if err := l4fwd.Run(ctx, os.Args[1:], reload, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "l4fwd:", err)
		os.Exit(1)
	}
}
