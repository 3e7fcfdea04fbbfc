package content

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"
)

func TestFields(t *testing.T) {
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	for _, tc := range []struct {
		name   string
		layout Layout
		value  string
		field  string
		want   string
		found  bool
	}{
		{"pairs", Layout{}, "tier=gold&region=eu", "tier", "gold", true},
		{"pairs, spaces", Layout{}, " tier = gold & region=eu", "tier", "gold", true},
		{"pairs, missing", Layout{}, "region=eu", "tier", "", false},
		{"pairs, escaped separator kept in the value", Layout{}, "name=a%26b&tier=gold", "name", "a&b", true},
		{"pairs, first of two", Layout{}, "tier=gold&tier=free", "tier", "gold", true},
		{"pairs, own separator", Layout{Separator: "|"}, "tier:x|tier=silver", "tier", "silver", true},
		{"pairs, key without value", Layout{}, "beta&tier=gold", "beta", "", true},
		{"json", Layout{Format: JSON}, `{"tier":"gold","n":3}`, "tier", "gold", true},
		{"json, nested", Layout{Format: JSON}, `{"user":{"tier":"gold","vip":true}}`, "user.vip", "true", true},
		{"json, number", Layout{Format: JSON}, `{"level":10.5}`, "level", "10.5", true},
		{"json, array", Layout{Format: JSON}, `{"roles":["a","admin"]}`, "roles.1", "admin", true},
		{"json, url-escaped", Layout{Format: JSON}, `%7B%22tier%22%3A%22gold%22%7D`, "tier", "gold", true},
		{"json, object is no value", Layout{Format: JSON}, `{"user":{"tier":"gold"}}`, "user", "", false},
		{"base64 pairs", Layout{Base64: true}, b64("tier=gold"), "tier", "gold", true},
		{"base64 json", Layout{Format: JSON, Base64: true}, b64(`{"tier":"gold"}`), "tier", "gold", true},
		{"base64, url alphabet unpadded", Layout{Format: JSON, Base64: true},
			strings.TrimRight(base64.URLEncoding.EncodeToString([]byte(`{"t":"?>?"}`)), "="), "t", "?>?", true},
		{"base64, escaped padding", Layout{Base64: true}, strings.ReplaceAll(b64("tier=go"), "=", "%3D"), "tier", "go", true},
		{"not json", Layout{Format: JSON}, "tier=gold", "tier", "", false},
		{"json array is no object", Layout{Format: JSON}, `["tier"]`, "tier", "", false},
		{"not base64", Layout{Base64: true}, "tier=gold!", "tier", "", false},
	} {
		fields, _ := tc.layout.Fields(tc.value)
		got, found := fields[tc.field]
		if got != tc.want || found != tc.found {
			t.Errorf("%s: field %q of %q = %q, %v; want %q, %v", tc.name, tc.field, tc.value, got, found, tc.want, tc.found)
		}
	}
}

func TestFieldsErrorsSayWhatIsWrong(t *testing.T) {
	if _, err := (Layout{}).Fields(strings.Repeat("a", maxValue+1)); !errors.Is(err, ErrTooLong) {
		t.Errorf("a 9 KB value: %v", err)
	}
	if _, err := (Layout{Format: JSON}).Fields("{"); !errors.Is(err, ErrNotJSON) {
		t.Errorf("broken JSON: %v", err)
	}
	if _, err := (Layout{Base64: true}).Fields("***"); !errors.Is(err, ErrNotBase64) {
		t.Errorf("not base64: %v", err)
	}
	if _, err := ParseFormat("xml"); err == nil || !strings.Contains(err.Error(), "pairs or json") {
		t.Errorf("unknown format: %v", err)
	}
}

func TestGlob(t *testing.T) {
	for _, tc := range []struct {
		pattern, s string
		want       bool
	}{
		{"gold", "gold", true}, {"gold", "golden", false},
		{"gold*", "golden", true}, {"*en", "golden", true}, {"*ol*", "golden", true},
		{"*", "", true}, {"a*a", "a", false}, {"a*b*c", "abc", true}, {"a*b*c", "acb", false},
		{"*x*y", "xyxy", true}, {"", "", true}, {"", "a", false},
	} {
		if got := Glob(tc.pattern, tc.s); got != tc.want {
			t.Errorf("Glob(%q, %q) = %v, want %v", tc.pattern, tc.s, got, tc.want)
		}
	}
}

// FuzzFields: no value, however malformed, makes the parser panic or
// return fields alongside an error; what pairs parse is stable.
func FuzzFields(f *testing.F) {
	for _, s := range []string{"tier=gold&region=eu", `{"a":{"b":[1,true,"x"]}}`, "%7B%22a%22%3A1%7D", "dGllcj1nb2xk", "a=%zz", "==&&=", `{"a":` + strings.Repeat("[", 100)} {
		f.Add(s, uint8(0), false)
		f.Add(s, uint8(1), true)
	}
	f.Fuzz(func(t *testing.T, value string, format uint8, b64 bool) {
		l := Layout{Format: Format(format % 2), Base64: b64}
		fields, err := l.Fields(value)
		if err != nil && fields != nil {
			t.Fatalf("fields %v returned with error %v", fields, err)
		}
		if err == nil && fields == nil {
			t.Fatal("no fields and no error")
		}
		if g := Glob(value, value); !g && !strings.Contains(value, "*") {
			t.Fatalf("a pattern without '*' must match itself: %q", value)
		}
	})
}
