package notify_test

import (
	"context"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/sluicelb/sluice/lbcore/notify"
)

func ExampleDispatcher() {
	// A health monitor publishes; the log line (and any webhook or mail)
	// is written in the background.
	d := notify.NewDispatcher(nil, 0, notify.Log{Logger: zap.NewExample()})
	d.Publish(notify.Event{
		Name:    "backend_down",
		Time:    time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC),
		Pool:    "web",
		Backend: "10.0.0.5:80",
		From:    "up",
		To:      "down",
		Reason:  "dial tcp 10.0.0.5:80: connection refused",
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := d.Close(ctx); err != nil {
		fmt.Println(err)
	}
	fmt.Printf("%+v\n", d.Stats())
	// Output:
	// {"level":"warn","msg":"backend_down","time":"2025-03-04T05:06:07.000Z","pool":"web","backend":"10.0.0.5:80","from":"up","to":"down","reason":"dial tcp 10.0.0.5:80: connection refused"}
	// {Published:1 Delivered:1 Dropped:0 Failed:0}
}

func ExampleWebhook_Validate() {
	w := &notify.Webhook{URL: "hooks.example.com/sluice"}
	fmt.Println(w.Validate())
	// Output: webhook URL is not absolute: it needs a scheme and host, as in https://hooks.example.com/sluice
}

func ExampleMail_Validate() {
	m := &notify.Mail{Server: "smtp.example.com", From: "lb@example.com", To: []string{"ops@example.com"}}
	fmt.Println(m.Validate())
	// Output: mail server "smtp.example.com" is not host:port, as in smtp.example.com:587
}
