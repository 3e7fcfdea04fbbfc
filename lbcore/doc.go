// Package lbcore is Sluice's load-balancing brain: pools and backends
// (package pool) and the selection policies that pick from them (package
// policy). It imports no engine: Caddy, CoreDNS and the kernel forwarders
// are thin faces over it.
package lbcore
