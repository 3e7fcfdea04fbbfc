// Package health holds the protocol checkers of Sluice's active health
// checks. A Checker probes one backend once (connect, speak just enough of
// its protocol to know it is serving, hang up) and returns a Result that
// says plainly what was wrong. Scheduling (intervals, rise and fall) lives
// elsewhere; a checker keeps no memory of earlier probes.
//
// Every checker opens a fresh connection per probe, honours its context's
// deadline on every read and write, and is safe for concurrent use once
// configured, so one checker can serve every backend of a pool.
package health
