// Package report reads the load that backends report about themselves, so
// that policies can keep every backend at the same fraction of its
// capacity. Backends report in a response header in the text or JSON
// forms of ORCA (Open Request Cost Aggregation, as Envoy and gRPC read
// it), or through an agent check's weight.
package report

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Header is the response header field ORCA's text and JSON forms use.
const Header = "Endpoint-Load-Metrics"

// Load is one report. Utilizations are fractions of the backend's
// capacity: 0.5 is half busy; above 1 means over its soft limit. Fields a
// report leaves out are NaN.
type Load struct {
	CPU         float64
	Memory      float64
	Application float64
	// RPS is the backend's own count of queries per second.
	RPS float64
}

// Utilization returns the figure that says how busy the backend is: the
// application's own utilization if given, else CPU, else NaN.
func (l Load) Utilization() float64 {
	if !math.IsNaN(l.Application) {
		return l.Application
	}
	return l.CPU
}

// maxUtilization bounds what a report may claim. ORCA lets utilization pass
// 1 under overload; a backend claiming more than ten times its capacity is
// lying, or broken.
const maxUtilization = 10

// maxLen bounds the header we read.
const maxLen = 4096

// ErrEmpty is returned for a report that says nothing usable.
var ErrEmpty = errors.New("load report has no utilization")

// Parse reads an Endpoint-Load-Metrics header value:
//
//	TEXT cpu_utilization=0.3, mem_utilization=0.8, rps_fractional=10.0
//	JSON {"cpu_utilization": 0.3, "application_utilization": 0.5}
//
// Unknown metrics (named_metrics.*, eps, …) are ignored. A report that is
// malformed, or whose figures are negative, NaN, infinite or beyond belief,
// is rejected whole: the caller keeps the last good one.
func Parse(v string) (Load, error) {
	l := Load{CPU: math.NaN(), Memory: math.NaN(), Application: math.NaN(), RPS: math.NaN()}
	if len(v) > maxLen {
		return l, fmt.Errorf("load report longer than %d bytes", maxLen)
	}
	v = strings.TrimSpace(v)
	format, body, _ := strings.Cut(v, " ")
	var err error
	switch strings.ToUpper(format) {
	case "TEXT":
		err = parseText(body, &l)
	case "JSON":
		err = parseJSON(body, &l)
	default:
		return l, fmt.Errorf("load report format %q is not TEXT or JSON", format)
	}
	if err != nil {
		return l, err
	}
	if math.IsNaN(l.Utilization()) {
		return l, ErrEmpty
	}
	return l, nil
}

func parseText(body string, l *Load) error {
	for pair := range strings.SplitSeq(body, ",") {
		pair = strings.TrimSpace(pair)
		if pair == "" {
			continue
		}
		name, value, ok := strings.Cut(pair, "=")
		if !ok {
			return fmt.Errorf("load report item %q is not name=value", pair)
		}
		f, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if err != nil {
			return fmt.Errorf("load report %s: %q is not a number", name, value)
		}
		if err := set(l, strings.TrimSpace(name), f); err != nil {
			return err
		}
	}
	return nil
}

func parseJSON(body string, l *Load) error {
	var m map[string]any
	if err := json.Unmarshal([]byte(body), &m); err != nil {
		return fmt.Errorf("load report is not valid JSON: %v", err)
	}
	for name, v := range m {
		f, ok := v.(float64)
		if !ok {
			if _, isMap := v.(map[string]any); isMap {
				continue // named_metrics and the like
			}
			return fmt.Errorf("load report %s: %v is not a number", name, v)
		}
		if err := set(l, name, f); err != nil {
			return err
		}
	}
	return nil
}

func set(l *Load, name string, f float64) error {
	var field *float64
	limit := float64(maxUtilization)
	switch name {
	case "cpu_utilization":
		field = &l.CPU
	case "mem_utilization":
		field = &l.Memory
	case "application_utilization":
		field = &l.Application
	case "rps_fractional":
		field, limit = &l.RPS, math.MaxFloat32
	default:
		return nil
	}
	if math.IsNaN(f) || math.IsInf(f, 0) || f < 0 || f > limit {
		return fmt.Errorf("load report %s=%v is out of range", name, f)
	}
	*field = f
	return nil
}
