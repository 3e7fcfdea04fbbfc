package pool

import "github.com/sluicelb/sluice/lbcore/registry"

// Registry holds backends by address, so that a backend named by several
// pools, or by the old and the new configuration during a reload, is one
// Backend with one set of counters.
type Registry = registry.Registry[*Backend]

// Backends is the process-wide registry.
var Backends = NewRegistry()

// NewRegistry returns an empty registry of backends.
func NewRegistry() *Registry { return registry.New(NewBackend) }
