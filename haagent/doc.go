// Package haagent moves a load balancer's floating addresses between the
// two hosts of a pair with VRRPv3 (RFC 5798, renamed RFC 9568), so that it
// can share a virtual router with keepalived or FRR.
//
// The pieces, one file each: the advertisement codec (packet.go), the RFC
// state machine, which takes the current time as an argument so tests run
// it in virtual time (machine.go), the sockets that carry adverts
// (conn.go), the virtual addresses (vips.go) and their announcements by
// gratuitous ARP and unsolicited neighbour advertisement (announce.go),
// tracking of local health, links and scripts (track.go), notifications
// (events.go), the configuration file (config.go) and the daemon that ties
// them together (agent.go, instance.go).
package haagent
