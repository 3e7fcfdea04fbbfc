// Package operator keeps what operators decide at run time — a backend
// taken offline, drained until a deadline, brought back, or given another
// weight in a pool — apart from configuration, so the decisions survive
// reloads and restarts. Decisions serialize to a document that load
// balancers sharing a store merge, newest decision first, so an action
// taken on one reaches the others.
package operator
