package m365sim

import (
	"fmt"
	"net/http"
	"strings"
)

// maxInValues is Graph's limit on the values of an `in` clause (and on OR
// child clauses) in a directory $filter.
const maxInValues = 15

// clause is "prop eq 'v'" or "prop in ('a','b')"; a filter is a conjunction.
type clause struct {
	prop   string
	values []*string // nil entry: the literal null
}

type token struct {
	kind byte // 'i' identifier, 's' string, 'n' null, '(' ')' ','
	text string
}

func tokenize(s string) ([]token, error) {
	var out []token
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == ' ' || c == '\t':
			i++
		case c == '(' || c == ')' || c == ',':
			out = append(out, token{kind: c})
			i++
		case c == '\'':
			var b strings.Builder
			i++
			closed := false
			for i < len(s) {
				if s[i] == '\'' {
					if i+1 < len(s) && s[i+1] == '\'' {
						b.WriteByte('\'')
						i += 2
						continue
					}
					i++
					closed = true
					break
				}
				b.WriteByte(s[i])
				i++
			}
			if !closed {
				return nil, fmt.Errorf("unterminated string literal")
			}
			out = append(out, token{kind: 's', text: b.String()})
		case isIdentChar(c):
			j := i
			for j < len(s) && isIdentChar(s[j]) {
				j++
			}
			word := s[i:j]
			if word == "null" {
				out = append(out, token{kind: 'n'})
			} else {
				out = append(out, token{kind: 'i', text: word})
			}
			i = j
		default:
			return nil, fmt.Errorf("syntax error at position %d", i)
		}
		if len(out) > 1000 {
			return nil, fmt.Errorf("filter too long")
		}
	}
	return out, nil
}

func isIdentChar(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '/' || c == '.' || c == '-' || c == '@'
}

// parseFilter parses the OData $filter subset Graph supports for these
// resources: conjunctions (and) of eq and in clauses on allowed properties.
func parseFilter(s, resource string, allowed map[string]bool) ([]clause, *graphError) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	syntax := func(detail string) *graphError {
		return gErr(http.StatusBadRequest, "BadRequest", "Invalid filter clause: "+detail)
	}
	toks, err := tokenize(s)
	if err != nil {
		return nil, syntax(err.Error())
	}
	var out []clause
	total := 0
	i := 0
	for {
		if i >= len(toks) || toks[i].kind != 'i' {
			return nil, syntax("a property name was expected.")
		}
		prop := toks[i].text
		i++
		if i >= len(toks) || toks[i].kind != 'i' {
			return nil, syntax("an operator was expected after '" + truncate(prop, 50) + "'.")
		}
		op := strings.ToLower(toks[i].text)
		i++
		cl := clause{prop: prop}
		switch op {
		case "eq":
			if i >= len(toks) || (toks[i].kind != 's' && toks[i].kind != 'n') {
				return nil, syntax("a literal was expected after 'eq'.")
			}
			cl.values = append(cl.values, literal(toks[i]))
			i++
		case "in":
			if i >= len(toks) || toks[i].kind != '(' {
				return nil, syntax("'(' was expected after 'in'.")
			}
			i++
			for {
				if i >= len(toks) || (toks[i].kind != 's' && toks[i].kind != 'n') {
					return nil, syntax("a literal was expected in the 'in' list.")
				}
				cl.values = append(cl.values, literal(toks[i]))
				i++
				if i < len(toks) && toks[i].kind == ',' {
					i++
					continue
				}
				if i < len(toks) && toks[i].kind == ')' {
					i++
					break
				}
				return nil, syntax("')' was expected to close the 'in' list.")
			}
		case "ne", "gt", "ge", "lt", "le", "startswith", "endswith", "has", "any", "all":
			return nil, gErr(http.StatusBadRequest, "Request_UnsupportedQuery", "Unsupported query: operator '"+op+"' is not supported for property '"+truncate(prop, 50)+"' of resource '"+resource+"'.")
		default:
			return nil, syntax("unknown operator '" + truncate(op, 50) + "'.")
		}
		if !allowed[prop] {
			return nil, gErr(http.StatusBadRequest, "Request_UnsupportedQuery", "Unsupported or invalid query filter clause specified for property '"+truncate(prop, 50)+"' of resource '"+resource+"'.")
		}
		total += len(cl.values)
		if total > maxInValues {
			return nil, gErr(http.StatusBadRequest, "Request_UnsupportedQuery", fmt.Sprintf("Too many child clauses specified in search filter expression containing 'OR' operators: %d. Max allowed: %d.", total, maxInValues))
		}
		out = append(out, cl)
		if i == len(toks) {
			return out, nil
		}
		if toks[i].kind != 'i' {
			return nil, syntax("'and' was expected.")
		}
		switch strings.ToLower(toks[i].text) {
		case "and":
			i++
		case "or":
			return nil, gErr(http.StatusBadRequest, "Request_UnsupportedQuery", "Unsupported query: 'or' is not supported; use 'in' instead.")
		default:
			return nil, syntax("'and' was expected.")
		}
	}
}

func literal(t token) *string {
	if t.kind == 'n' {
		return nil
	}
	v := t.text
	return &v
}

// matchAll reports whether entity m satisfies every clause.
func matchAll(clauses []clause, m map[string]any) bool {
	for _, c := range clauses {
		v := lookupProp(m, c.prop)
		matched := false
		for _, want := range c.values {
			if want == nil {
				if v == nil {
					matched = true
				}
			} else if sv, ok := v.(string); ok && strings.EqualFold(sv, *want) {
				matched = true
			}
			if matched {
				break
			}
		}
		if !matched {
			return false
		}
	}
	return true
}

func lookupProp(m map[string]any, path string) any {
	var cur any = m
	for _, part := range strings.Split(path, "/") {
		mm, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = mm[part]
	}
	return cur
}
