package haagent_test

import (
	"fmt"
	"strings"

	"github.com/sluicelb/sluice/haagent"
)

func ExampleParseConfig() {
	conf := `
router web {
	interface lo
	vrid 51
	priority 150
	advert 100ms
	vip 10.99.0.100/24
	track http http://127.0.0.1:2019/config/ weight -60
}
`
	c, err := haagent.ParseConfig("haagent.conf", strings.NewReader(conf))
	if err != nil {
		fmt.Println(err)
		return
	}
	r := c.Routers[0]
	fmt.Println(r.Name, r.VRID, r.Priority, r.VIPs, r.Tracks[0].Kind, r.Tracks[0].Weight)
	fmt.Println("backup takes over after", haagent.MasterDownInterval(100, r.Interval))

	_, err = haagent.ParseConfig("haagent.conf", strings.NewReader("router web {\n\tvrid 256\n}\n"))
	fmt.Println(err)
	// Output:
	// web 51 150 [10.99.0.100/24] http -60
	// backup takes over after 360.9375ms
	// haagent.conf:2: vrid "256": want a whole number from 1 to 255
}
