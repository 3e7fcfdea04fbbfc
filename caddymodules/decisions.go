package caddymodules

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"time"

	"go.uber.org/zap"

	"github.com/sluicelb/sluice/lbcore/operator"
	"github.com/sluicelb/sluice/lbcore/pool"
)

// decisionsKey is where operator decisions live in Caddy's storage. Every
// instance that shares the storage (an LB pair, a cluster) reads and
// writes the same document.
const decisionsKey = "sluice/operator.json"

// errDamagedDecisions says the document in storage does not parse.
var errDamagedDecisions = errors.New("damaged operator decisions")

// DefaultSyncInterval is how often operator decisions are read from
// storage.
const DefaultSyncInterval = 2 * time.Second

// loadDecisions takes the newer decisions from storage and applies them
// to the backends and pools they concern. A missing document is no
// decision; a damaged one is reported and the decisions held are kept.
func (a *App) loadDecisions() error {
	data, err := a.storage.Load(a.ctx, decisionsKey)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading operator decisions from storage: %v", err)
	}
	a.syncMu.Lock()
	defer a.syncMu.Unlock()
	if bytes.Equal(data, a.lastDecisions) {
		return nil
	}
	doc, err := operator.ParseDocument(data)
	if err != nil {
		return fmt.Errorf("storage key %s: %w: %v", decisionsKey, errDamagedDecisions, err)
	}
	a.lastDecisions = data
	a.apply(operator.Current.Merge(doc), "storage")
	return nil
}

// apply brings backends and pools in line with changed decisions.
func (a *App) apply(ch operator.Changes, source string) {
	for _, addr := range ch.Backends {
		if be, ok := pool.Backends.Lookup(addr); ok {
			operator.Current.Apply(be)
		}
	}
	for _, name := range ch.Pools {
		for _, b := range a.bindings(name) {
			b.reweigh()
		}
	}
	if len(ch.Backends)+len(ch.Pools) > 0 {
		a.logger.Info("operator decisions applied", zap.String("from", source),
			zap.Strings("backends", ch.Backends), zap.Strings("pools", ch.Pools))
	}
}

// saveDecisions writes the decisions held to storage, merged under the
// storage's lock with what other instances wrote meanwhile.
func (a *App) saveDecisions() error {
	if err := a.storage.Lock(a.ctx, decisionsKey); err != nil {
		return fmt.Errorf("locking operator decisions in storage: %v", err)
	}
	defer a.storage.Unlock(a.ctx, decisionsKey)
	if err := a.loadDecisions(); err != nil && !errors.Is(err, errDamagedDecisions) {
		return err // a damaged document is overwritten with the good one
	}
	data, err := json.MarshalIndent(operator.Current.Document(), "", "\t")
	if err != nil {
		return err
	}
	if err := a.storage.Store(a.ctx, decisionsKey, data); err != nil {
		return fmt.Errorf("writing operator decisions to storage: %v", err)
	}
	a.syncMu.Lock()
	a.lastDecisions = data
	a.syncMu.Unlock()
	return nil
}

// syncDecisions reads decisions from storage every SyncInterval until the
// app stops. Errors are logged when they change, not every round.
func (a *App) syncDecisions() {
	tick := time.NewTicker(time.Duration(a.SyncInterval))
	defer tick.Stop()
	var lastErr string
	for {
		select {
		case <-a.run.Done():
			return
		case <-tick.C:
		}
		err := a.loadDecisions()
		switch {
		case err != nil && err.Error() != lastErr:
			a.logger.Error("keeping the operator decisions held", zap.Error(err))
			lastErr = err.Error()
		case err == nil:
			lastErr = ""
		}
	}
}
