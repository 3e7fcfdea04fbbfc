// Command caddy is Caddy with Sluice's modules plugged in: what
// `xcaddy build --with github.com/sluicelb/sluice/caddymodules` produces.
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	// Caddy's standard modules.
	_ "github.com/caddyserver/caddy/v2/modules/standard"
)

func main() {
	caddycmd.Main()
}
