// Package l4fwd is Sluice's layer-4 forwarder: a control plane that turns
// virtual services (VIP, protocol, port, real servers) into an nftables
// ruleset, with the kernel as the data plane, so no packet is ever copied
// to user space.
//
// Two modes. NAT schedules a new connection by setting its conntrack mark
// (numgen inc or jhash into a map of the values of a fixed modulus, 1000,
// dealt to the servers by weight and interleaved, so that numgen takes
// them in turn) and DNATs by the mark; the load balancer is the real
// servers' gateway, or with SNAT their source too. DR (direct routing)
// runs in a netdev ingress chain: it rewrites the destination MAC (and
// the source, so the segment's switch keeps learning the client where it
// is), remembers each flow in a dynamic map (a bare SYN forgets what the
// map held for its address and port, so a new connection is always
// scheduled), and sends the frame back out of the same device (dup +
// drop, as google/nftables has no fwd); the real servers answer the
// client directly.
//
// The desired state (Desired) is built from the configuration and lbcore's
// pools, whose backends carry health verdicts (lbcore/health) and operator
// states (drain, offline). The ruleset is a pure function of it; a change
// is planned as the difference from the last committed ruleset and sent
// as one netlink transaction, so the kernel holds either the old ruleset or
// the new one. A persistence map is refreshed from the packet path only
// for servers that still take sessions, so draining finishes.
//
// The command is cmd/l4fwd; Run is its body.
package l4fwd
