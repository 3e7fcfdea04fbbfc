// Package caddymodules plugs Sluice into Caddy: selection policies for
// reverse_proxy that delegate every decision to lbcore. Build a Caddy with
// them by importing this package (xcaddy build --with
// github.com/sluicelb/sluice/caddymodules, or see cmd/caddy).
package caddymodules
