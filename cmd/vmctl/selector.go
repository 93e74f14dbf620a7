package main

import (
	"fmt"
	"strings"
)

// requirement is one term of a label selector.
type requirement struct {
	key    string
	op     string // "=", "!=", "exists", "!exists"
	values string
}

// selector is a parsed equality-based label selector (the subset of
// Kubernetes' syntax people type: a=b, a==b, a!=b, a, !a; comma = AND).
// Matching happens client-side: lists are small and the server need not
// know selectors.
type selector []requirement

// parseSelector parses s; the empty selector matches everything.
func parseSelector(s string) (selector, error) {
	var sel selector
	if strings.TrimSpace(s) == "" {
		return sel, nil
	}
	for _, term := range strings.Split(s, ",") {
		term = strings.TrimSpace(term)
		var r requirement
		switch {
		case term == "":
			return nil, fmt.Errorf("empty term in selector %q", s)
		case strings.Contains(term, "!="):
			k, v, _ := strings.Cut(term, "!=")
			r = requirement{key: strings.TrimSpace(k), op: "!=", values: strings.TrimSpace(v)}
		case strings.Contains(term, "=="):
			k, v, _ := strings.Cut(term, "==")
			r = requirement{key: strings.TrimSpace(k), op: "=", values: strings.TrimSpace(v)}
		case strings.Contains(term, "="):
			k, v, _ := strings.Cut(term, "=")
			r = requirement{key: strings.TrimSpace(k), op: "=", values: strings.TrimSpace(v)}
		case strings.HasPrefix(term, "!"):
			r = requirement{key: strings.TrimSpace(term[1:]), op: "!exists"}
		default:
			r = requirement{key: term, op: "exists"}
		}
		if r.key == "" || strings.ContainsAny(r.key, " !=()") || strings.ContainsAny(r.values, " !=()") {
			return nil, fmt.Errorf("invalid term %q in selector %q (set-based selectors are not supported)", term, s)
		}
		sel = append(sel, r)
	}
	return sel, nil
}

// matches reports whether labels satisfy every requirement.
func (sel selector) matches(labels map[string]string) bool {
	for _, r := range sel {
		v, ok := labels[r.key]
		switch r.op {
		case "=":
			if !ok || v != r.values {
				return false
			}
		case "!=":
			if ok && v == r.values {
				return false
			}
		case "exists":
			if !ok {
				return false
			}
		case "!exists":
			if ok {
				return false
			}
		}
	}
	return true
}
