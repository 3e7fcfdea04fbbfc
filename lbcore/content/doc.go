// Package content reads what content-switching rules look at beyond the
// engine's own matchers: the fields inside structured cookie values
// (key=value pairs, JSON, or either in base64), and value patterns.
package content
