// Package persist keeps a client's session on one backend. A Table binds
// session keys (a client's network, a header value, a session cookie the
// backend issued) to backends for a timeout, refreshed by each request,
// within a bounded memory. Tokens carry the binding in a cookie the load
// balancer signs, so load balancers sharing the key need no table at all.
// Choose decides, request by request, whether a bound session stays on its
// backend or moves to the one the pool's policy picks.
package persist
