package content

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
)

// Format is how a structured value lays out its fields.
type Format uint8

const (
	// Pairs are key=value pairs joined by a separator: tier=gold&region=eu.
	Pairs Format = iota
	// JSON is a JSON object; nested fields are named by dotted paths.
	JSON
)

// ParseFormat reads a format's name: "pairs" or "json".
func ParseFormat(name string) (Format, error) {
	switch name {
	case "pairs", "":
		return Pairs, nil
	case "json":
		return JSON, nil
	}
	return 0, fmt.Errorf("unknown cookie format %q; want pairs or json", name)
}

func (f Format) String() string {
	if f == JSON {
		return "json"
	}
	return "pairs"
}

// Layout says how to read a structured value.
type Layout struct {
	Format Format
	// Separator joins pairs. Default: "&".
	Separator string
	// Base64 says the value is base64 (standard or URL alphabet, padded
	// or not) of the format.
	Base64 bool
}

// maxValue bounds what is parsed: browsers keep cookies under 4 KB.
const maxValue = 8 << 10

// Errors Fields returns.
var (
	ErrTooLong   = errors.New("value is longer than 8 KB")
	ErrNotBase64 = errors.New("value is not base64")
	ErrNotJSON   = errors.New("value is not a JSON object")
)

// Fields parses value and returns its fields, flattened: nested JSON
// objects and arrays are named by dotted paths ("user.tier",
// "roles.0"), and numbers, booleans and strings become their text. For
// pairs, keys and values are URL-unescaped after splitting, so an escaped
// separator inside a value stays part of it. A key given twice keeps its
// first value.
func (l Layout) Fields(value string) (map[string]string, error) {
	if len(value) > maxValue {
		return nil, ErrTooLong
	}
	if l.Base64 {
		raw, err := decodeBase64(value)
		if err != nil {
			return nil, err
		}
		value = raw
	}
	if l.Format == JSON {
		return jsonFields(value)
	}
	return l.pairs(value), nil
}

func decodeBase64(s string) (string, error) {
	if u, err := url.QueryUnescape(s); err == nil {
		s = u // cookies often carry base64's '=' escaped
	}
	s = strings.TrimRight(s, "=")
	for _, enc := range []*base64.Encoding{base64.RawStdEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil {
			return string(b), nil
		}
	}
	return "", ErrNotBase64
}

func (l Layout) pairs(value string) map[string]string {
	sep := l.Separator
	if sep == "" {
		sep = "&"
	}
	fields := make(map[string]string)
	for part := range strings.SplitSeq(value, sep) {
		k, v, _ := strings.Cut(part, "=")
		k, v = unescape(strings.TrimSpace(k)), unescape(strings.TrimSpace(v))
		if _, seen := fields[k]; k != "" && !seen {
			fields[k] = v
		}
	}
	return fields
}

func unescape(s string) string {
	if u, err := url.QueryUnescape(s); err == nil {
		return u
	}
	return s
}

func jsonFields(value string) (map[string]string, error) {
	value = strings.TrimSpace(value)
	if strings.HasPrefix(value, "%7B") || strings.HasPrefix(value, "%7b") {
		value = unescape(value)
	}
	var obj map[string]any
	dec := json.NewDecoder(strings.NewReader(value))
	dec.UseNumber()
	if err := dec.Decode(&obj); err != nil || obj == nil {
		return nil, ErrNotJSON
	}
	fields := make(map[string]string)
	flatten("", obj, fields, 0)
	return fields, nil
}

// maxDepth bounds how deep nested JSON is followed.
const maxDepth = 16

func flatten(prefix string, v any, out map[string]string, depth int) {
	if depth > maxDepth {
		return
	}
	join := func(k string) string {
		if prefix == "" {
			return k
		}
		return prefix + "." + k
	}
	switch v := v.(type) {
	case map[string]any:
		for k, sub := range v {
			flatten(join(k), sub, out, depth+1)
		}
	case []any:
		for i, sub := range v {
			flatten(join(strconv.Itoa(i)), sub, out, depth+1)
		}
	case string:
		out[prefix] = v
	case json.Number:
		out[prefix] = v.String()
	case bool:
		out[prefix] = strconv.FormatBool(v)
	}
}
