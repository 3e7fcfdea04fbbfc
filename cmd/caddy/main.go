// Command caddy is Caddy with Sluice's modules plugged in: the program
// `xcaddy build --with github.com/sluicelb/sluice/caddymodules` generates.
// xcaddy.json is its build manifest; a test keeps the two in agreement.
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	// Caddy's standard modules.
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	// Sluice's modules.
	_ "github.com/sluicelb/sluice/caddymodules"
)

func main() {
	caddycmd.Main()
}
