package main

import (
	"encoding/json"
	"go/parser"
	"go/token"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// manifest is xcaddy.json: what `xcaddy build` needs to produce this Caddy.
type manifest struct {
	CaddyVersion string `json:"caddy_version"`
	Plugins      []struct {
		Module  string `json:"module"`
		Package string `json:"package"`
		Replace string `json:"replace"`
	} `json:"plugins"`
}

// TestManifestAgrees fails when cmd/caddy, go.mod and xcaddy.json tell
// different stories about the Caddy being built.
func TestManifestAgrees(t *testing.T) {
	raw, err := os.ReadFile("../../xcaddy.json")
	if err != nil {
		t.Fatal(err)
	}
	var m manifest
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		t.Fatalf("xcaddy.json: %v", err)
	}

	gomod, err := os.ReadFile("../../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	caddyVersion, module := "", ""
	for _, line := range strings.Split(string(gomod), "\n") {
		f := strings.Fields(strings.TrimPrefix(strings.TrimSpace(line), "require "))
		switch {
		case len(f) == 2 && f[0] == "module":
			module = f[1]
		case len(f) >= 2 && f[0] == "github.com/caddyserver/caddy/v2":
			caddyVersion = f[1]
		}
	}
	if caddyVersion != m.CaddyVersion {
		t.Errorf("go.mod requires Caddy %q, xcaddy.json says %q", caddyVersion, m.CaddyVersion)
	}

	file, err := parser.ParseFile(token.NewFileSet(), "main.go", nil, parser.ImportsOnly)
	if err != nil {
		t.Fatal(err)
	}
	var imports []string
	for _, imp := range file.Imports {
		path, _ := strconv.Unquote(imp.Path.Value)
		imports = append(imports, path)
	}
	want := []string{"github.com/caddyserver/caddy/v2/cmd", "github.com/caddyserver/caddy/v2/modules/standard"}
	for _, p := range m.Plugins {
		if p.Module != module && !strings.HasPrefix(p.Package, p.Module+"/") {
			t.Errorf("plugin package %s is not in module %s", p.Package, p.Module)
		}
		if p.Module == module && p.Replace != "." {
			t.Errorf("plugin %s is this module: xcaddy must build it from here (replace \".\"), not %q", p.Module, p.Replace)
		}
		want = append(want, p.Package)
	}
	slices.Sort(imports)
	slices.Sort(want)
	if !slices.Equal(imports, want) {
		t.Errorf("cmd/caddy/main.go imports %v; xcaddy.json builds %v", imports, want)
	}
}
