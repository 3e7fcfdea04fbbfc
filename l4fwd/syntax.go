package l4fwd

import (
	"fmt"
	"strings"
)

// directive is one line of configuration: a name, its arguments and, when
// the line ends in "{", the directives of its block up to the matching "}".
type directive struct {
	name  string
	args  []string
	line  int
	block []directive // nil when the line opened no block
}

// ConfigError is a configuration mistake, located so an operator can go
// straight to it.
type ConfigError struct {
	File string
	Line int
	Msg  string
}

func (e *ConfigError) Error() string {
	return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
}

// lexLine splits one line into words: "{" and "}" are words of their own
// wherever they stand, and "#" starts a comment.
func lexLine(s string) []string {
	if i := strings.IndexByte(s, '#'); i >= 0 {
		s = s[:i]
	}
	s = strings.NewReplacer("{", " { ", "}", " } ").Replace(s)
	return strings.Fields(s)
}

// parseDirectives reads the whole text into a tree of directives. It knows
// nothing of what the words mean; config.go does.
func parseDirectives(file, text string) ([]directive, error) {
	type frame struct {
		opened int // line of the "{"
		list   []directive
	}
	stack := []frame{{}}
	for i, raw := range strings.Split(text, "\n") {
		line := i + 1
		words := lexLine(raw)
		if len(words) == 0 {
			continue
		}
		if words[0] == "}" {
			if len(words) > 1 {
				return nil, &ConfigError{file, line, fmt.Sprintf("unexpected %q after \"}\": put it on a line of its own", words[1])}
			}
			if len(stack) == 1 {
				return nil, &ConfigError{file, line, "\"}\" closes no block"}
			}
			done := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			parent := &stack[len(stack)-1]
			last := &parent.list[len(parent.list)-1]
			last.block = done.list
			if last.block == nil {
				last.block = []directive{} // an empty block is still a block
			}
			continue
		}
		opens := words[len(words)-1] == "{"
		if opens {
			words = words[:len(words)-1]
		}
		for _, w := range words {
			if w == "{" || w == "}" {
				return nil, &ConfigError{file, line, fmt.Sprintf("%q must end the line (to open a block) or stand alone (to close one)", w)}
			}
		}
		if len(words) == 0 {
			return nil, &ConfigError{file, line, "\"{\" without a directive before it"}
		}
		d := directive{name: words[0], args: words[1:], line: line}
		top := &stack[len(stack)-1]
		top.list = append(top.list, d)
		if opens {
			stack = append(stack, frame{opened: line})
		}
	}
	if len(stack) > 1 {
		return nil, &ConfigError{file, stack[len(stack)-1].opened, "block opened here is never closed: missing \"}\""}
	}
	return stack[0].list, nil
}
