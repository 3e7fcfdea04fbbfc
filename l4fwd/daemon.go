package l4fwd

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"

	"go.uber.org/zap"
)

// Run is the l4fwd command: it parses args, puts the configuration in
// force, reloads it whenever reload delivers (SIGHUP), and removes its
// tables from the kernel when ctx ends. Output goes to stdout (-check,
// -status) and logs to stderr.
func Run(ctx context.Context, args []string, reload <-chan os.Signal, stdout io.Writer) error {
	fs := flag.NewFlagSet("l4fwd", flag.ContinueOnError)
	path := fs.String("config", "/etc/sluice/l4fwd.conf", "configuration `file`")
	check := fs.Bool("check", false, "check the configuration against this host, print it with every default, and exit")
	status := fs.String("status", "", "print the status of the l4fwd whose status endpoint is at `host:port`, and exit")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if *status != "" {
		return printStatus(ctx, *status, stdout)
	}
	cfg, err := LoadConfig(*path)
	if err != nil {
		return err
	}
	host, err := NewHost()
	if err != nil {
		return err
	}
	if *check {
		if err := CheckNetwork(cfg, host); err != nil {
			return err
		}
		_, err := io.WriteString(stdout, cfg.Format())
		return err
	}
	log, err := zap.NewProduction()
	if err != nil {
		return err
	}
	defer func() { _ = log.Sync() }()
	kernel, err := NewNFT()
	if err != nil {
		return err
	}
	b := NewBalancer(log, kernel, host)
	if err := b.Load(ctx, cfg); err != nil {
		return err
	}
	defer func() {
		if err := b.Close(); err != nil {
			log.Error("remove nftables tables", zap.Error(err))
		}
	}()
	if cfg.Status != "" {
		srv, err := serveStatus(cfg.Status, b, log)
		if err != nil {
			return err
		}
		defer srv.Close()
	}
	for {
		select {
		case <-ctx.Done():
			log.Info("stopping: removing l4fwd's tables")
			return nil
		case <-reload:
			next, err := LoadConfig(*path)
			if err == nil {
				if next.Status != cfg.Status {
					log.Warn("the status address changes only on restart", zap.String("kept", cfg.Status))
				}
				err = b.Load(ctx, next)
			}
			if err != nil {
				log.Error("reload refused; the previous configuration stays in force", zap.Error(err))
				continue
			}
		}
	}
}

func serveStatus(addr string, b *Balancer, log *zap.Logger) (*http.Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("status endpoint: %w", err)
	}
	srv := &http.Server{Handler: b.Handler(), ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("status endpoint", zap.Error(err))
		}
	}()
	return srv, nil
}

// printStatus is `l4fwd -status host:port`.
func printStatus(ctx context.Context, addr string, w io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/status", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		return fmt.Errorf("status endpoint answered %s: %s", resp.Status, body)
	}
	var st Status
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return fmt.Errorf("read status: %w", err)
	}
	_, err = io.WriteString(w, formatStatus(st))
	return err
}
