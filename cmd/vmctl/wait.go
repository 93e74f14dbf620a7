package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/vmdhq/vmd/api/v1alpha1"
	"github.com/vmdhq/vmd/internal/client"
	"github.com/vmdhq/vmd/internal/errdefs"
)

// forever stands in for "no timeout" (kubectl uses a week too).
const forever = 7 * 24 * time.Hour

type waitOptions struct {
	*rootOptions
	forExpr string
	timeout time.Duration
}

func newWaitCmd(root *rootOptions) *cobra.Command {
	o := &waitOptions{rootOptions: root}
	cmd := &cobra.Command{
		Use:   "wait (TYPE/NAME... | TYPE NAME...) --for=CONDITION",
		Short: "Wait for a condition on VMInstances or VMDisks",
		Long: `Wait until every named object meets a condition, then print
"<type>/<name> condition met"; exit 1 on timeout.

--for takes:
  condition=TYPE[=STATUS]   a status condition (STATUS defaults to True)
  delete                    the object is gone
  jsonpath={.a.b}[=VALUE]   a field has VALUE (or, without VALUE, is set);
                            only dotted paths such as {.status.phase}

A condition reported for an older generation of the object does not count,
so waiting right after an apply waits for the new spec to be acted on.`,
		Example: `  vmctl wait vmi/web --for=condition=Ready --timeout=5m
  vmctl wait vmd ubuntu --for=jsonpath='{.status.phase}'=Ready
  vmctl wait vmi/web --for=delete`,
		Args:              cobra.MinimumNArgs(1),
		ValidArgsFunction: completeResources(root),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.run(cmd.Context(), args)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.forExpr, "for", "", "the condition to wait for: condition=TYPE[=STATUS], delete or jsonpath={.path}[=VALUE]")
	f.DurationVar(&o.timeout, "timeout", 30*time.Second, "give up after this long; 0 checks once, a negative value waits a week")
	_ = cmd.MarkFlagRequired("for")
	_ = cmd.RegisterFlagCompletionFunc("for", cobra.FixedCompletions([]string{"condition=Ready", "delete", "jsonpath="}, cobra.ShellCompDirectiveNoFileComp|cobra.ShellCompDirectiveNoSpace))
	return cmd
}

// waitFor is a parsed --for.
type waitFor struct {
	deletion bool
	// condition=TYPE[=STATUS]
	condType string
	status   v1alpha1.ConditionStatus
	// jsonpath={.a.b}[=VALUE]
	path     []string
	value    string
	hasValue bool
}

// parseFor reads the --for expression.
func parseFor(s string) (waitFor, error) {
	kind, rest, _ := strings.Cut(s, "=")
	switch strings.ToLower(kind) {
	case "delete":
		if rest != "" {
			return waitFor{}, fmt.Errorf("--for=delete takes no value, got %q", s)
		}
		return waitFor{deletion: true}, nil
	case "condition":
		typ, status, hasStatus := strings.Cut(rest, "=")
		if typ == "" {
			return waitFor{}, fmt.Errorf("--for=condition needs a condition type, e.g. condition=Ready")
		}
		if !hasStatus {
			status = string(v1alpha1.ConditionTrue)
		}
		return waitFor{condType: typ, status: v1alpha1.ConditionStatus(status)}, nil
	case "jsonpath":
		return parseJSONPathFor(rest)
	}
	return waitFor{}, fmt.Errorf("unrecognized condition %q: use condition=TYPE[=STATUS], delete or jsonpath={.path}[=VALUE]", s)
}

// parseJSONPathFor reads "{.status.phase}=Running" (braces optional).
// Only dotted field paths are supported: no indexes, filters or wildcards.
func parseJSONPathFor(s string) (waitFor, error) {
	var expr, value string
	var hasValue bool
	if strings.HasPrefix(s, "{") {
		end := strings.Index(s, "}")
		if end < 0 {
			return waitFor{}, fmt.Errorf("jsonpath %q: missing '}'", s)
		}
		expr = s[1:end]
		rest := s[end+1:]
		if rest != "" {
			if !strings.HasPrefix(rest, "=") {
				return waitFor{}, fmt.Errorf("jsonpath %q: expected '=' after '}'", s)
			}
			value, hasValue = rest[1:], true
		}
	} else {
		expr, value, hasValue = strings.Cut(s, "=")
	}
	if !strings.HasPrefix(expr, ".") || len(expr) < 2 {
		return waitFor{}, fmt.Errorf("jsonpath %q: want a field path such as {.status.phase}", s)
	}
	if strings.ContainsAny(expr, "[]*?@()\"' ") {
		return waitFor{}, fmt.Errorf("jsonpath %q: only simple dotted paths such as {.status.phase} are supported", s)
	}
	path := strings.Split(expr[1:], ".")
	for _, p := range path {
		if p == "" {
			return waitFor{}, fmt.Errorf("jsonpath %q: empty path segment", s)
		}
	}
	return waitFor{path: path, value: value, hasValue: hasValue}, nil
}

// met evaluates the condition on the current object.
func (w waitFor) met(obj v1alpha1.Object, deleted bool) (bool, error) {
	if w.deletion {
		return deleted, nil
	}
	if deleted || obj == nil {
		return false, nil
	}
	if w.path == nil {
		return client.ConditionMet(obj, w.condType, w.status), nil
	}
	got, found, err := lookupPath(obj, w.path)
	if err != nil || !found {
		return false, err
	}
	if !w.hasValue {
		return true, nil
	}
	return got == w.value, nil
}

// lookupPath returns the scalar at path in obj's JSON form.
func lookupPath(obj v1alpha1.Object, path []string) (string, bool, error) {
	data, err := json.Marshal(obj)
	if err != nil {
		return "", false, fmt.Errorf("encoding object: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var cur any
	if err := dec.Decode(&cur); err != nil {
		return "", false, fmt.Errorf("decoding object: %w", err)
	}
	for _, p := range path {
		m, ok := cur.(map[string]any)
		if !ok {
			return "", false, nil
		}
		if cur, ok = m[p]; !ok {
			return "", false, nil
		}
	}
	switch v := cur.(type) {
	case nil:
		return "", false, nil
	case string:
		return v, true, nil
	case json.Number:
		return v.String(), true, nil
	case bool:
		return fmt.Sprint(v), true, nil
	}
	return "", false, fmt.Errorf("{.%s} is not a string, number or boolean", strings.Join(path, "."))
}

func (o *waitOptions) run(ctx context.Context, args []string) error {
	cond, err := parseFor(o.forExpr)
	if err != nil {
		return err
	}
	targets, err := o.targetsFromArgs(args)
	if err != nil {
		return err
	}
	c, err := o.client()
	if err != nil {
		return err
	}
	timeout := o.timeout
	if timeout < 0 {
		timeout = forever
	}
	wctx, cancel := context.WithTimeout(ctx, max(timeout, 0))
	defer cancel()
	for _, t := range targets {
		if err := o.waitOne(ctx, wctx, c, t, cond, timeout == 0); err != nil {
			return err
		}
		fmt.Fprintf(o.streams.Out, "%s condition met\n", objectID(t.kind, t.name))
	}
	return nil
}

// waitOne waits for one object; with once it only checks the current state.
func (o *waitOptions) waitOne(ctx, wctx context.Context, c *client.Client, t target, cond waitFor, once bool) error {
	timedOut := fmt.Errorf("timed out waiting for the condition on %s", t)
	// Read first (with the caller's context, so a zero --timeout still
	// gets an answer): a missing object is an error unless we wait for
	// its deletion, as in kubectl.
	obj, err := c.Get(ctx, t.kind, t.namespace, t.name)
	deleted := errors.Is(err, errdefs.ErrNotFound)
	switch {
	case deleted && !cond.deletion:
		return notFound(err, t.kind, t.name)
	case err != nil && !deleted:
		return err
	}
	if ok, err := cond.met(obj, deleted); err != nil || ok {
		return err
	}
	if once {
		return timedOut
	}
	uid := obj.GetObjectMeta().UID
	_, err = c.WaitFor(wctx, t.kind, t.namespace, t.name, func(cur v1alpha1.Object, deleted bool) (bool, error) {
		// An object re-created under the same name is a new object:
		// the one we waited on is gone.
		if cond.deletion && cur != nil && uid != "" && cur.GetObjectMeta().UID != uid {
			return true, nil
		}
		return cond.met(cur, deleted)
	})
	if err != nil && errors.Is(wctx.Err(), context.DeadlineExceeded) && ctx.Err() == nil {
		return timedOut
	}
	return err
}
