// Package lbcore is Sluice's load-balancing brain. It imports no engine:
// Caddy, CoreDNS and the kernel forwarders are thin faces over it.
//
//   - pool: backends (states, weights, counters, response-time averages)
//     and pools that publish immutable snapshots for lock-free selection;
//   - policy: the selection policies;
//   - health: protocol checkers and the monitor that turns their results
//     into backend states (rise/fall, groups, passive, slow start, agents);
//   - notify: log, webhook and e-mail notifications;
//   - report: load reports backends send about themselves (ORCA);
//   - persist: session tables, signed session tokens, stay-or-move;
//   - content: fields inside structured cookie values;
//   - operator: run-time operator decisions, shared between instances;
//   - registry: state that outlives configurations.
package lbcore
