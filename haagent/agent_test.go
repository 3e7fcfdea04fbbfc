package haagent

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRunConfigTest(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.conf")
	bad := filepath.Join(dir, "bad.conf")
	if err := os.WriteFile(good, []byte(minimalConfig), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bad, []byte("router web {\n\tinterface lo\n\tadvert fast\n}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	if err := run(context.Background(), []string{"-t", "-f", good}, &out, &errOut); err != nil {
		t.Errorf("-t on a good file: %v", err)
	}
	if !strings.Contains(out.String(), "is valid: 1 router(s)") {
		t.Errorf("-t said %q", out.String())
	}
	err := run(context.Background(), []string{"-t", "-f", bad}, &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "bad.conf:3: \"fast\" is not a duration") {
		t.Errorf("-t on a bad file: %v", err)
	}
	if err := run(context.Background(), []string{"-f", filepath.Join(dir, "missing.conf")}, &out, &errOut); err == nil {
		t.Error("a missing file was accepted")
	}
	if err := run(context.Background(), []string{"-nosuchflag"}, &out, &errOut); err == nil {
		t.Error("an unknown flag was accepted")
	}
}
