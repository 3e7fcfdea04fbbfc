// Package notify tells operators about state changes: a backend going down,
// coming back or flapping, a pool failing over to its standbys, a VRRP
// transition. An Event goes to any number of Notifiers (a zap log line, a
// JSON webhook, an e-mail) through a Dispatcher, which delivers in the
// background so that a slow webhook or mail server never holds up the
// health checker or the request path.
package notify
