package report

import (
	"math"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	good := []struct {
		in   string
		util float64
	}{
		{"TEXT cpu_utilization=0.3, mem_utilization=0.8, rps_fractional=10.0", 0.3},
		{"TEXT cpu_utilization=0.3,application_utilization=0.6", 0.6},
		{"text cpu_utilization=1.5, named_metrics.queue=7, eps=2", 1.5},
		{`JSON {"cpu_utilization": 0.25, "named_metrics": {"q": 3}}`, 0.25},
		{`JSON {"application_utilization": 0.9}`, 0.9},
	}
	for _, c := range good {
		l, err := Parse(c.in)
		if err != nil {
			t.Errorf("Parse(%q): %v", c.in, err)
			continue
		}
		if l.Utilization() != c.util {
			t.Errorf("Parse(%q) utilization %v, want %v", c.in, l.Utilization(), c.util)
		}
	}
	bad := []string{
		"", "TEXT", "BIN abc", "TEXT cpu_utilization", "TEXT cpu_utilization=abc",
		"TEXT cpu_utilization=-0.1", "TEXT cpu_utilization=NaN", "TEXT cpu_utilization=Inf",
		"TEXT cpu_utilization=1e9", "TEXT mem_utilization=0.5", `JSON {"cpu_utilization": "high"}`,
		"JSON {", "TEXT cpu_utilization=0.1," + strings.Repeat("x", maxLen),
	}
	for _, in := range bad {
		if l, err := Parse(in); err == nil {
			t.Errorf("Parse(%.40q) accepted: %+v", in, l)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"TEXT cpu_utilization=0.3", `JSON {"cpu_utilization": 0.3}`, "TEXT a=1,b=2", "JSON []"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		l, err := Parse(in)
		if err != nil {
			return
		}
		u := l.Utilization()
		if math.IsNaN(u) || u < 0 || u > maxUtilization {
			t.Fatalf("Parse(%q) accepted utilization %v", in, u)
		}
	})
}
