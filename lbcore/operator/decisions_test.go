package operator

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sluicelb/sluice/lbcore/pool"
)

func TestDecisionsApplyToBackends(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	d := new(Decisions)
	b := pool.NewBackend("10.0.0.1:80")
	d.Apply(b)
	if b.Admin() != pool.Active {
		t.Fatal("a backend nobody decided on changed state")
	}
	d.Decide(b.Address, Drain, now.Add(time.Minute), now)
	d.Apply(b)
	if b.Admin() != pool.Draining || !b.DrainDeadline().Equal(now.Add(time.Minute)) {
		t.Fatalf("drain: admin %v deadline %v", b.Admin(), b.DrainDeadline())
	}
	d.Decide(b.Address, Offline, time.Time{}, now.Add(time.Second))
	d.Apply(b)
	if b.Admin() != pool.Offline {
		t.Fatal("offline not applied")
	}
	d.Decide(b.Address, Online, time.Time{}, now.Add(2*time.Second))
	d.Apply(b)
	if b.Admin() != pool.Active {
		t.Fatal("online not applied")
	}
	d.Reweigh("web", b.Address, 5, now)
	if w, ok := d.Weight("web", b.Address); !ok || w != 5 {
		t.Fatalf("weight %d, %v; want 5", w, ok)
	}
	if _, ok := d.Weight("api", b.Address); ok {
		t.Fatal("a weight given in one pool applies in another")
	}
	d.Reweigh("web", b.Address, 0, now)
	if _, ok := d.Weight("web", b.Address); ok {
		t.Fatal("weight 0 should restore the configured weight")
	}
}

// TestMergeTakesTheNewestDecision is two load balancers sharing a store:
// each takes the other's newer decisions and keeps its own newer ones.
func TestMergeTakesTheNewestDecision(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	lb1, lb2 := new(Decisions), new(Decisions)
	lb1.Decide("a:80", Offline, time.Time{}, now)
	lb2.Decide("a:80", Online, time.Time{}, now.Add(time.Second)) // later
	lb2.Decide("b:80", Drain, now.Add(time.Hour), now)
	lb1.Reweigh("web", "a:80", 3, now.Add(2*time.Second))

	stored, err := json.Marshal(lb2.Document())
	if err != nil {
		t.Fatal(err)
	}
	doc, err := ParseDocument(stored)
	if err != nil {
		t.Fatal(err)
	}
	ch := lb1.Merge(doc)
	if !slices.Equal(ch.Backends, []string{"a:80", "b:80"}) || len(ch.Pools) != 0 {
		t.Fatalf("changes %+v; want both backends and no pool", ch)
	}
	if dec, _ := lb1.Backend("a:80"); dec.Action != Online {
		t.Fatal("the newer online lost to the older offline")
	}
	if dec, _ := lb1.Backend("b:80"); dec.Action != Drain || !dec.DrainDeadline.Equal(now.Add(time.Hour)) {
		t.Fatalf("drain decision arrived as %+v", dec)
	}
	if ch := lb2.Merge(lb1.Document()); len(ch.Backends) != 0 || !slices.Equal(ch.Pools, []string{"web"}) {
		t.Fatalf("merging back: changes %+v; want only the weight", ch)
	}
	if ch := lb2.Merge(lb1.Document()); len(ch.Backends)+len(ch.Pools) != 0 {
		t.Fatalf("a second merge of the same document changed %+v", ch)
	}
}

func TestParseDocumentRejectsBadDecisions(t *testing.T) {
	for doc, want := range map[string]string{
		`{"backends": {"a:80": {"action": "explode"}}}`:  `unknown action "explode"`,
		`{"weights": {"web": {"a:80": {"weight": -1}}}}`: "negative",
		`{"backends": [`: "operator decisions",
	} {
		if _, err := ParseDocument([]byte(doc)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseDocument(%s) = %v, want an error saying %q", doc, err, want)
		}
	}
}
