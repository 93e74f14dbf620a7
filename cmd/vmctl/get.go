package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/vmdhq/vmd/api/v1alpha1"
	"github.com/vmdhq/vmd/internal/client"
	"github.com/vmdhq/vmd/internal/errdefs"
)

type getOptions struct {
	*rootOptions
	output        string
	allNamespaces bool
	watch         bool
	selector      string
}

func newGetCmd(root *rootOptions) *cobra.Command {
	o := &getOptions{rootOptions: root}
	cmd := &cobra.Command{
		Use:   "get (TYPE[,TYPE...] [NAME...] | TYPE/NAME...) [flags]",
		Short: "List VMInstances and VMDisks",
		Long: `Print a table of the most important information about objects.

TYPE is vminstances (vmi), vmdisks (vmd), a comma-separated list of them,
or all.`,
		Example: `  vmctl get vmi
  vmctl get vmi,vmd -A
  vmctl get vmi web -o yaml
  vmctl get vmd -w`,
		Args:              cobra.MinimumNArgs(1),
		ValidArgsFunction: completeResources(root),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.run(cmd.Context(), args)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&o.output, "output", "o", "", "output format: wide, yaml, json or name")
	f.BoolVarP(&o.allNamespaces, "all-namespaces", "A", false, "list objects in every namespace")
	f.BoolVarP(&o.watch, "watch", "w", false, "after listing, watch for changes")
	f.StringVarP(&o.selector, "selector", "l", "", "label selector to filter on (e.g. app=web,tier!=db)")
	_ = cmd.RegisterFlagCompletionFunc("output", cobra.FixedCompletions([]string{"wide", "yaml", "json", "name"}, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

// fetched is what get collected for one kind.
type fetched struct {
	kind            v1alpha1.Kind
	objs            []v1alpha1.Object
	resourceVersion string
}

func (o *getOptions) run(ctx context.Context, args []string) error {
	if err := validOutput(o.output); err != nil {
		return err
	}
	refs, err := parseResourceArgs(args)
	if err != nil {
		return err
	}
	sel, err := parseSelector(o.selector)
	if err != nil {
		return err
	}
	if o.allNamespaces && len(refs[0].names) > 0 {
		return errors.New("a resource cannot be retrieved by name across all namespaces")
	}
	if o.watch && len(refs) > 1 {
		return errors.New("watch is only supported on one resource type at a time")
	}
	c, err := o.client()
	if err != nil {
		return err
	}
	ns, _ := o.ns()
	if o.allNamespaces {
		ns = ""
	}

	// Fetch everything first, then print, so a NotFound for one name is
	// reported next to (not in the middle of) the table of the others.
	var results []fetched
	var errs []error
	for _, ref := range refs {
		f := fetched{kind: ref.kind}
		if len(ref.names) == 0 {
			list, err := c.List(ctx, ref.kind, ns)
			if err != nil {
				return err
			}
			f.resourceVersion = list.ResourceVersion
			for _, obj := range list.Items {
				if sel.matches(obj.GetObjectMeta().Labels) {
					f.objs = append(f.objs, obj)
				}
			}
		} else {
			for _, name := range ref.names {
				obj, err := c.Get(ctx, ref.kind, ns, name)
				if err != nil {
					if !errors.Is(err, errdefs.ErrNotFound) {
						return err
					}
					errs = append(errs, notFound(err, ref.kind, name))
					continue
				}
				f.objs = append(f.objs, obj)
			}
		}
		results = append(results, f)
	}

	total := 0
	for _, r := range results {
		total += len(r.objs)
	}
	multiKind := len(refs) > 1
	switch o.output {
	case outputYAML, outputJSON:
		var all []v1alpha1.Object
		for _, r := range results {
			all = append(all, r.objs...)
		}
		// One object asked for by name prints as itself, anything else
		// as a List, as kubectl does.
		single := len(refs) == 1 && len(refs[0].names) == 1
		if total > 0 || len(errs) == 0 {
			if err := printObjects(o.streams.Out, o.output, all, single); err != nil {
				return err
			}
		}
	case outputName:
		for _, r := range results {
			for _, obj := range r.objs {
				printName(o.streams.Out, obj)
			}
		}
	default:
		opts := tableOptions{wide: o.output == outputWide, withNamespace: o.allNamespaces, withKind: multiKind, now: o.now()}
		first := true
		for _, r := range results {
			if len(r.objs) == 0 {
				continue
			}
			if !first {
				fmt.Fprintln(o.streams.Out)
			}
			first = false
			if err := printTable(o.streams.Out, r.kind, r.objs, opts, true); err != nil {
				return err
			}
		}
		if total == 0 && len(errs) == 0 && !o.watch {
			if ns == "" {
				fmt.Fprintln(o.streams.ErrOut, "No resources found")
			} else {
				fmt.Fprintf(o.streams.ErrOut, "No resources found in %s namespace.\n", ns)
			}
		}
	}
	if len(errs) > 0 {
		for _, err := range errs {
			printError(o.streams.ErrOut, err)
		}
		return errReported
	}
	if o.watch {
		r := results[0]
		return o.watchLoop(ctx, c, r.kind, ns, refs[0].names, sel, r.resourceVersion, total > 0)
	}
	return nil
}

// watchLoop prints one row (or object) per change after the initial
// listing, until ctx ends. A stream that ends is resumed; a 410 Gone makes
// it list again from a fresh revision (changes in between are printed as
// the current state, as kubectl's reflector would).
func (o *getOptions) watchLoop(ctx context.Context, c *client.Client, kind v1alpha1.Kind, ns string, names []string,
	sel selector, rv string, headerPrinted bool) error {
	wanted := func(obj v1alpha1.Object) bool {
		m := obj.GetObjectMeta()
		if len(names) > 0 {
			found := false
			for _, n := range names {
				found = found || n == m.Name
			}
			if !found {
				return false
			}
		}
		return sel.matches(m.Labels)
	}
	if rv == "" {
		// Watching named objects: Get returned no collection revision.
		list, err := c.List(ctx, kind, ns)
		if err != nil {
			return err
		}
		rv = list.ResourceVersion
	}
	relist := false
	for ctx.Err() == nil {
		if relist {
			list, err := c.List(ctx, kind, ns)
			if err != nil {
				return err
			}
			rv, relist = list.ResourceVersion, false
		}
		ch, err := c.Watch(ctx, kind, ns, rv)
		if errors.Is(err, errdefs.ErrGone) {
			relist = true
			continue
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		for ev := range ch {
			switch ev.Type {
			case v1alpha1.Error:
				if !errors.Is(ev.Err, errdefs.ErrGone) {
					return ev.Err
				}
				relist = true
				continue
			case v1alpha1.Bookmark:
				rv = ev.ResourceVersion()
				continue
			}
			rv = ev.ResourceVersion()
			if !wanted(ev.Object) {
				continue
			}
			if err := o.printEvent(o.streams.Out, ev.Object, !headerPrinted); err != nil {
				return err
			}
			headerPrinted = true
		}
		// The server ended the stream (timeout, restart): pause briefly
		// so a server that keeps hanging up is not hammered, then resume.
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
	// Interrupted by the user: a normal end of `get -w`.
	return nil
}

// printEvent prints one watched object in the chosen format.
func (o *getOptions) printEvent(w io.Writer, obj v1alpha1.Object, header bool) error {
	switch o.output {
	case outputName:
		printName(w, obj)
		return nil
	case outputJSON:
		return encode(w, outputJSON, obj)
	case outputYAML:
		if _, err := fmt.Fprintln(w, "---"); err != nil {
			return err
		}
		return encode(w, outputYAML, obj)
	}
	opts := tableOptions{wide: o.output == outputWide, withNamespace: o.allNamespaces, now: o.now()}
	return printTable(w, obj.GetTypeMeta().Kind, []v1alpha1.Object{obj}, opts, header)
}
