package pool

// ConnLimits are IPVS's connection thresholds for a backend: one that
// reaches Max open connections takes no new ones until fewer than Min
// remain, so it does not flap in and out at the limit.
type ConnLimits struct {
	Max, Min int
}

// Full reports whether a backend with open connections is full now,
// given whether it was.
func (l ConnLimits) Full(wasFull bool, open int) bool {
	if wasFull {
		return open >= l.Min
	}
	return l.Max > 0 && open >= l.Max
}
