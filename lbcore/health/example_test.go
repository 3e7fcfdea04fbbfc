package health_test

import (
	"fmt"
	"time"

	"github.com/sluicelb/sluice/lbcore/health"
)

func ExampleParseAgentReply() {
	for _, line := range []string{"up 75%", "drain", "down#disk full", "60%", "sideways"} {
		rep, err := health.ParseAgentReply(line)
		if err != nil {
			fmt.Println("error:", err)
			continue
		}
		fmt.Printf("%q: state %s, weight %d\n", line, rep.State, rep.WeightPercent)
	}
	// Output:
	// "up 75%": state up, weight 75
	// "drain": state drain, weight -1
	// "down#disk full": state down, weight -1
	// "60%": state unset, weight 60
	// error: agent reply has unknown word "sideways"
}

func ExampleResult_DaysToExpiry() {
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	r := health.Result{CertExpiry: now.Add(10*24*time.Hour + 12*time.Hour)}
	fmt.Printf("%.1f days left\n", r.DaysToExpiry(now))
	// Output: 10.5 days left
}
