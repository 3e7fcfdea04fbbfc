package caddymodules

import (
	"errors"
	"math"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/sluicelb/sluice/lbcore/pool"
)

// backendCollector exports every backend's live figures at scrape time,
// reading lbcore's atomics: nothing is counted twice, and requests pay
// nothing for metrics.
type backendCollector struct{}

var (
	descUp = prometheus.NewDesc("sluice_backend_up",
		"Whether the backend may take new requests (1) or not (0): down, offline, draining or at zero weight.", []string{"backend"}, nil)
	descDown = prometheus.NewDesc("sluice_backend_down",
		"Whether health checks (Sluice's or Caddy's) judge the backend down.", []string{"backend"}, nil)
	descInFlight = prometheus.NewDesc("sluice_backend_in_flight_requests",
		"Requests sent to the backend and not yet finished.", []string{"backend"}, nil)
	descTotal = prometheus.NewDesc("sluice_backend_requests_total",
		"Requests the backend finished, failures included.", []string{"backend"}, nil)
	descFailures = prometheus.NewDesc("sluice_backend_failures_total",
		"Requests the backend failed to answer.", []string{"backend"}, nil)
	descResponse = prometheus.NewDesc("sluice_backend_response_seconds",
		"The backend's response-time average.", []string{"backend"}, nil)
	descScale = prometheus.NewDesc("sluice_backend_weight_scale",
		"The share of its configured weight the backend takes now (slow start, agent reports), as a fraction.", []string{"backend"}, nil)
	descCheck = prometheus.NewDesc("sluice_backend_check_seconds",
		"How long the backend's last round of health checks took.", []string{"backend"}, nil)
	descLoad = prometheus.NewDesc("sluice_backend_reported_load",
		"The utilization the backend last reported of itself (ORCA header), as a fraction.", []string{"backend"}, nil)
)

func (backendCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descUp, descDown, descInFlight, descTotal, descFailures, descResponse, descScale, descCheck, descLoad} {
		ch <- d
	}
}

func (backendCollector) Collect(ch chan<- prometheus.Metric) {
	pool.Backends.Each(func(b *pool.Backend) {
		gauge := func(d *prometheus.Desc, v float64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, b.Address)
		}
		gauge(descUp, boolFloat(b.Available()))
		gauge(descDown, boolFloat(b.Down()))
		gauge(descInFlight, float64(b.InFlight()))
		ch <- prometheus.MustNewConstMetric(descTotal, prometheus.CounterValue, float64(b.Total()), b.Address)
		ch <- prometheus.MustNewConstMetric(descFailures, prometheus.CounterValue, float64(b.Failures()), b.Address)
		gauge(descResponse, b.ResponseTime().Seconds())
		gauge(descScale, float64(b.Scale())/100)
		gauge(descCheck, b.CheckLatency().Seconds())
		if load := b.ReportedLoad(); !math.IsNaN(load) {
			gauge(descLoad, load)
		}
	})
}

var (
	descSticky = prometheus.NewDesc("sluice_sticky_sessions",
		"Sessions bound to the backend by a sticky policy's table.", []string{"pool", "by", "backend"}, nil)
	descStickyMemory = prometheus.NewDesc("sluice_sticky_memory_bytes",
		"An estimate of the memory a pool's sticky table holds.", []string{"pool", "by"}, nil)
)

// sessionCollector exports the sticky tables at scrape time.
type sessionCollector struct{}

func (sessionCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descSticky
	ch <- descStickyMemory
}

func (sessionCollector) Collect(ch chan<- prometheus.Metric) {
	sessionStates.Each(func(s *sessions) {
		poolName, by, _ := strings.Cut(s.name, "\x00")
		st := s.table.Stats()
		for backend, n := range st.ByBackend {
			ch <- prometheus.MustNewConstMetric(descSticky, prometheus.GaugeValue, float64(n), poolName, by, backend)
		}
		ch <- prometheus.MustNewConstMetric(descStickyMemory, prometheus.GaugeValue, float64(st.Memory), poolName, by)
	})
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// registerMetrics adds the collector to Caddy's registry once; later
// configurations find it there.
func registerMetrics(ctx caddy.Context) {
	reg := ctx.GetMetricsRegistry()
	if reg == nil {
		return
	}
	for _, c := range []prometheus.Collector{backendCollector{}, sessionCollector{}} {
		if err := reg.Register(c); err != nil {
			var already prometheus.AlreadyRegisteredError
			if !errors.As(err, &already) {
				ctx.Logger().Warn("registering Sluice's metrics", zap.Error(err))
			}
		}
	}
}
