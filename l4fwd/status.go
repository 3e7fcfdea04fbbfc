package l4fwd

import (
	"encoding/json"
	"net/http"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/sluicelb/sluice/lbcore/pool"
)

// Status is what the status endpoint and `l4fwd -status` report.
type Status struct {
	Config    string          `json:"config"`
	Table     string          `json:"table"`
	Commits   uint64          `json:"commits"`              // successful kernel transactions
	Failures  uint64          `json:"failures"`             // failed ones (the previous ruleset stayed)
	LastError string          `json:"last_error,omitempty"` // of the last transaction, if it failed
	Services  []ServiceStatus `json:"services"`
}

// ServiceStatus is one virtual service's state.
type ServiceStatus struct {
	Name  string       `json:"name"`
	VIP   string       `json:"vip"`
	Port  uint16       `json:"port"` // 0: every port
	Proto string       `json:"protocol"`
	Mode  string       `json:"mode"`
	Reals []RealStatus `json:"reals"`
}

// RealStatus is one real server's state and counters.
type RealStatus struct {
	Address string `json:"address"`
	State   string `json:"state"` // active, standby, full, draining, offline or down
	Weight  int    `json:"weight"`
	// Share is the fraction of new connections the scheduler gives it now.
	Share    float64 `json:"share"`
	MAC      string  `json:"mac,omitempty"`
	Packets  uint64  `json:"packets"`
	Bytes    uint64  `json:"bytes"`
	NewConns uint64  `json:"new_connections"`
}

// Status reports the desired state in force with the kernel's counters.
func (b *Balancer) Status() (Status, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	st := Status{Commits: b.commits, Failures: b.failures, LastError: b.lastErr}
	if b.cfg == nil || b.desired == nil {
		return st, nil
	}
	st.Config, st.Table = b.cfg.File, b.desired.Table
	counters, err := b.kernel.Counters(b.desired)
	if err != nil {
		return st, err
	}
	for i, s := range b.desired.Services {
		ss := ServiceStatus{Name: s.Name, VIP: s.VIP.String(), Port: s.Port, Proto: s.Proto, Mode: s.Mode.String()}
		slotsOf := make([]int, len(s.Reals))
		for _, real := range s.Slots {
			slotsOf[real]++
		}
		for j, r := range s.Reals {
			state := r.State.String()
			if r.Full && r.State == pool.Active {
				state = "full"
			}
			rs := RealStatus{Address: r.Target(s.Service), State: state, Weight: r.Weight,
				Share: float64(slotsOf[j]) / Modulus, Packets: counters[i][j].Packets,
				Bytes: counters[i][j].Bytes, NewConns: counters[i][j].NewConns}
			if r.MAC != nil {
				rs.MAC = r.MAC.String()
			}
			ss.Reals = append(ss.Reals, rs)
		}
		st.Services = append(st.Services, ss)
	}
	return st, nil
}

// Handler serves GET /status (JSON) and GET /metrics (Prometheus).
func (b *Balancer) Handler() http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collector{b})
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		st, err := b.Status()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(st)
	})
	return mux
}

var (
	labels      = []string{"service", "real"}
	descPackets = prometheus.NewDesc("sluice_l4_real_packets_total", "Packets clients sent to the real server through l4fwd.", labels, nil)
	descBytes   = prometheus.NewDesc("sluice_l4_real_bytes_total", "Bytes clients sent to the real server through l4fwd.", labels, nil)
	descNew     = prometheus.NewDesc("sluice_l4_real_new_connections_total", "Connections (DR: flows) scheduled to the real server.", labels, nil)
	descUp      = prometheus.NewDesc("sluice_l4_real_eligible", "1 while the real server takes new connections.", labels, nil)
	descShare   = prometheus.NewDesc("sluice_l4_real_share", "Fraction of new connections the scheduler gives the real server.", labels, nil)
	descCommits = prometheus.NewDesc("sluice_l4_commits_total", "nftables transactions committed.", nil, nil)
	descFails   = prometheus.NewDesc("sluice_l4_commit_failures_total", "nftables transactions the kernel refused (the previous ruleset stayed).", nil, nil)
)

// collector reads the kernel's counters at scrape time.
type collector struct{ b *Balancer }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descPackets, descBytes, descNew, descUp, descShare, descCommits, descFails} {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	st, err := c.b.Status()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(descPackets, err)
		return
	}
	ch <- prometheus.MustNewConstMetric(descCommits, prometheus.CounterValue, float64(st.Commits))
	ch <- prometheus.MustNewConstMetric(descFails, prometheus.CounterValue, float64(st.Failures))
	for _, s := range st.Services {
		for _, r := range s.Reals {
			ch <- prometheus.MustNewConstMetric(descPackets, prometheus.CounterValue, float64(r.Packets), s.Name, r.Address)
			ch <- prometheus.MustNewConstMetric(descBytes, prometheus.CounterValue, float64(r.Bytes), s.Name, r.Address)
			ch <- prometheus.MustNewConstMetric(descNew, prometheus.CounterValue, float64(r.NewConns), s.Name, r.Address)
			ch <- prometheus.MustNewConstMetric(descUp, prometheus.GaugeValue, boolValue(r.Share > 0), s.Name, r.Address)
			ch <- prometheus.MustNewConstMetric(descShare, prometheus.GaugeValue, r.Share, s.Name, r.Address)
		}
	}
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// formatStatus prints a status as the -status command shows it.
func formatStatus(st Status) string {
	out := "config " + st.Config + ", table " + st.Table + ", " + strconv.FormatUint(st.Commits, 10) + " commits, " +
		strconv.FormatUint(st.Failures, 10) + " failed\n"
	if st.LastError != "" {
		out += "last error: " + st.LastError + "\n"
	}
	for _, s := range st.Services {
		port := "all"
		if s.Port != 0 {
			port = strconv.Itoa(int(s.Port))
		}
		out += "service " + s.Name + " " + s.Proto + " " + s.VIP + ":" + port + " (" + s.Mode + ")\n"
		for _, r := range s.Reals {
			out += "  " + r.Address + " " + r.State + " weight " + strconv.Itoa(r.Weight) +
				" share " + strconv.FormatFloat(r.Share*100, 'f', 1, 64) + "% packets " + strconv.FormatUint(r.Packets, 10) +
				" bytes " + strconv.FormatUint(r.Bytes, 10) + " new " + strconv.FormatUint(r.NewConns, 10) + "\n"
		}
	}
	return out
}
