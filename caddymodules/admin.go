package caddymodules

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/sluicelb/sluice/lbcore/operator"
	"github.com/sluicelb/sluice/lbcore/persist"
	"github.com/sluicelb/sluice/lbcore/pool"
)

func init() {
	caddy.RegisterModule(AdminAPI{})
}

// AdminAPI serves Sluice's operator routes on Caddy's admin endpoint, so
// they share its access controls (by default a localhost address or a unix
// socket; remote admin only with client certificates):
//
//	GET  /sluice/pools                                          every pool, its backends and sticky sessions
//	GET  /sluice/pools/<pool>                                   one pool
//	POST /sluice/pools/<pool>/backends/<address>/offline        take a backend out at once
//	POST /sluice/pools/<pool>/backends/<address>/online         put it back
//	POST /sluice/pools/<pool>/backends/<address>/drain          no new sessions; body {"deadline": "10m"} cuts
//	                                                            bound sessions after that long (default: they
//	                                                            finish as they expire)
//	POST /sluice/pools/<pool>/backends/<address>/weight         body {"weight": 5}; 0 restores the configured weight
//
// A backend is one server: taken offline or drained, it is so in every
// pool that names it. Weights belong to one pool. Decisions survive
// reloads, are kept in Caddy's storage across restarts, and reach every
// instance that shares the storage within its sync_interval.
type AdminAPI struct{}

// CaddyModule returns the Caddy module information.
func (AdminAPI) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "admin.api.sluice",
		New: func() caddy.Module { return new(AdminAPI) },
	}
}

// Routes returns the routes.
func (AdminAPI) Routes() []caddy.AdminRoute {
	return []caddy.AdminRoute{{Pattern: "/sluice/", Handler: caddy.AdminHandlerFunc(serveAdmin)}}
}

func apiError(status int, format string, args ...any) error {
	err := fmt.Errorf(format, args...)
	return caddy.APIError{HTTPStatus: status, Err: err, Message: err.Error()}
}

func serveAdmin(w http.ResponseWriter, r *http.Request) error {
	app := activeApp(r.Context())
	if app == nil {
		return apiError(http.StatusServiceUnavailable, "no running configuration uses a Sluice policy")
	}
	parts := strings.Split(strings.Trim(strings.TrimPrefix(r.URL.Path, "/sluice/"), "/"), "/")
	switch {
	case len(parts) == 1 && parts[0] == "pools":
		if r.Method != http.MethodGet {
			return apiError(http.StatusMethodNotAllowed, "GET lists pools; %s is not allowed", r.Method)
		}
		return writeJSON(w, app.poolStatuses(""))
	case len(parts) == 2 && parts[0] == "pools":
		if r.Method != http.MethodGet {
			return apiError(http.StatusMethodNotAllowed, "GET shows a pool; %s is not allowed", r.Method)
		}
		pools := app.poolStatuses(parts[1])
		if len(pools) == 0 {
			return apiError(http.StatusNotFound, "no pool named %q", parts[1])
		}
		return writeJSON(w, pools[0])
	case len(parts) == 5 && parts[0] == "pools" && parts[2] == "backends":
		if r.Method != http.MethodPost {
			return apiError(http.StatusMethodNotAllowed, "actions take POST, not %s", r.Method)
		}
		return app.act(w, r, parts[1], parts[3], parts[4])
	}
	return apiError(http.StatusNotFound, "no such route; see /sluice/pools")
}

func writeJSON(w http.ResponseWriter, v any) error {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "\t")
	return enc.Encode(v)
}

// poolStatus is a pool as the admin API shows it.
type poolStatus struct {
	Name        string             `json:"name"`
	Policy      string             `json:"policy"`
	OnStandby   bool               `json:"on_standby"`
	Failover    string             `json:"failover,omitempty"`
	Persistence *persistenceStatus `json:"persistence,omitempty"`
	Backends    []backendStatus    `json:"backends"`
}

type persistenceStatus struct {
	persist.Stats
	Timeout    string `json:"timeout"`
	BadCookies uint64 `json:"bad_cookies,omitempty"`
	// Stateless says the sessions live in signed cookies, so no table
	// counts them.
	Stateless bool `json:"stateless,omitempty"`
}

type backendStatus struct {
	Address          string     `json:"address"`
	State            string     `json:"state"`
	Weight           int        `json:"weight"`
	ConfiguredWeight int        `json:"configured_weight"`
	WeightScale      float64    `json:"weight_scale"`
	Standby          bool       `json:"standby,omitempty"`
	InFlight         int64      `json:"in_flight"`
	Requests         uint64     `json:"requests_total"`
	Failures         uint64     `json:"failures_total"`
	ResponseTimeMS   float64    `json:"response_time_ms"`
	DrainDeadline    *time.Time `json:"drain_deadline,omitempty"`
	LeavesAt         *time.Time `json:"leaves_at,omitempty"`
	StickySessions   *int       `json:"sticky_sessions,omitempty"`
}

// poolStatuses describes the bound pools, or only the one called name.
func (a *App) poolStatuses(name string) []poolStatus {
	out := []poolStatus{}
	for _, b := range a.bindings(name) {
		snap := b.pool.Snapshot()
		ps := poolStatus{Name: b.pool.Name, Policy: b.bd.policyName, OnStandby: snap.OnStandby, Failover: b.bd.failover}
		var stats persist.Stats
		if b.sessions != nil {
			ps.Persistence = &persistenceStatus{Timeout: b.sessions.table.Timeout().String()}
			if b.bd.sessions.tokens != nil {
				ps.Persistence.Stateless = true
				ps.Persistence.BadCookies = b.bd.sessions.badCookies.count.Load()
			} else {
				stats = b.sessions.table.Stats()
				ps.Persistence.Stats = stats
				ps.Persistence.ByBackend = nil // shown by backend below
			}
		}
		for _, m := range snap.Members {
			ps.Backends = append(ps.Backends, b.backendStatus(m, stats))
		}
		out = append(out, ps)
	}
	slices.SortFunc(out, func(x, y poolStatus) int { return strings.Compare(x.Name, y.Name) })
	return out
}

func (b *binding) backendStatus(m pool.Member, stats persist.Stats) backendStatus {
	be := m.Backend
	st := backendStatus{
		Address: be.Address, State: m.State().String(), Weight: m.Weight,
		ConfiguredWeight: b.bd.members.weight(be.Address), WeightScale: float64(be.Scale()) / 100,
		Standby: m.Standby, InFlight: be.InFlight(), Requests: be.Total(), Failures: be.Failures(),
		ResponseTimeMS: float64(be.ResponseTime().Microseconds()) / 1000,
	}
	if d := be.DrainDeadline(); be.Admin() == pool.Draining && !d.IsZero() {
		st.DrainDeadline = &d
	}
	if !m.LeavesAt.IsZero() {
		st.LeavesAt = &m.LeavesAt
	}
	if stats.ByBackend != nil {
		n := stats.ByBackend[be.Address]
		st.StickySessions = &n
	}
	return st
}

// actionBody is what an action's POST body may say.
type actionBody struct {
	Deadline caddy.Duration `json:"deadline,omitempty"`
	Weight   *int           `json:"weight,omitempty"`
}

// maxWeight bounds operator weights as sane configurations would.
const maxWeight = 1_000_000

// act carries out an operator's action on the backend at address in the
// pool called poolName.
func (a *App) act(w http.ResponseWriter, r *http.Request, poolName, address, action string) error {
	bindings := a.bindings(poolName)
	if len(bindings) == 0 {
		return apiError(http.StatusNotFound, "no pool named %q", poolName)
	}
	var member pool.Member
	found := false
	for _, m := range bindings[0].pool.Snapshot().Members {
		if m.Backend.Address == address && m.LeavesAt.IsZero() {
			member, found = m, true
		}
	}
	if !found {
		return apiError(http.StatusNotFound, "pool %q has no backend %q", poolName, address)
	}
	var body actionBody
	dec := json.NewDecoder(io.LimitReader(r.Body, 4096))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil && !errors.Is(err, io.EOF) {
		return apiError(http.StatusBadRequest, "the body must be JSON such as {\"deadline\": \"10m\"} or {\"weight\": 3}: %v", err)
	}
	now := time.Now()
	event := map[string]any{"pool": poolName, "backend": address, "action": action}
	if action == "weight" {
		if body.Weight == nil || *body.Weight < 0 || *body.Weight > maxWeight || body.Deadline != 0 {
			return apiError(http.StatusBadRequest, "weight takes {\"weight\": n} with n from 1 to %d, or 0 for the configured weight", maxWeight)
		}
		operator.Current.Reweigh(poolName, address, *body.Weight, now)
		a.apply(operator.Changes{Pools: []string{poolName}}, "admin API")
		event["weight"] = *body.Weight
	} else {
		act, err := operator.ParseAction(action)
		if err != nil {
			return apiError(http.StatusNotFound, "%v, or weight", err)
		}
		if body.Weight != nil || body.Deadline < 0 || (body.Deadline != 0 && act != operator.Drain) {
			return apiError(http.StatusBadRequest, "%s takes no weight; only drain takes a positive deadline", action)
		}
		var deadline time.Time
		if body.Deadline > 0 {
			deadline = now.Add(time.Duration(body.Deadline))
			event["deadline"] = deadline
		}
		operator.Current.Decide(address, act, deadline, now)
		a.apply(operator.Changes{Backends: []string{address}}, "admin API")
	}
	a.emit("operator_action", event)
	saveErr := a.saveDecisions()
	snap := bindings[0].pool.Snapshot()
	if m, ok := snap.Member(member.Backend); ok {
		member = m
	}
	if saveErr != nil {
		return apiError(http.StatusInternalServerError, "%s applied here, but not shared: %v", action, saveErr)
	}
	return writeJSON(w, bindings[0].backendStatus(member, persist.Stats{}))
}

// Interface guards
var _ caddy.AdminRouter = (*AdminAPI)(nil)
