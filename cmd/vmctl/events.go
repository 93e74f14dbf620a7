package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/vmdhq/vmd/api/v1alpha1"
	"github.com/vmdhq/vmd/internal/client"
	"github.com/vmdhq/vmd/internal/errdefs"
)

type eventsOptions struct {
	*rootOptions
	allNamespaces bool
	forObject     string
	types         []string
}

func newEventsCmd(root *rootOptions) *cobra.Command {
	o := &eventsOptions{rootOptions: root}
	cmd := &cobra.Command{
		Use:   "events [--for TYPE/NAME] [-A] [--types Normal,Warning]",
		Short: "List events about VMInstances and VMDisks",
		Long: `List what happened to objects (an import started, a disk became ready, a
retry after an error), least recently seen first, like kubectl events.

vmd keeps events in memory for about an hour after they last occurred and
forgets them when it restarts: they explain recent history, while the
object's status is the source of truth.`,
		Example: `  vmctl events
  vmctl events --for vmdisk/ubuntu
  vmctl events -A --types Warning`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.run(cmd.Context())
		},
	}
	f := cmd.Flags()
	f.BoolVarP(&o.allNamespaces, "all-namespaces", "A", false, "list events in every namespace")
	f.StringVar(&o.forObject, "for", "", "only events about this object, as TYPE/NAME (e.g. vmdisk/data)")
	f.StringSliceVar(&o.types, "types", nil, "only events of these types: Normal, Warning")
	_ = cmd.RegisterFlagCompletionFunc("types", cobra.FixedCompletions([]string{v1alpha1.EventTypeNormal, v1alpha1.EventTypeWarning}, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

func (o *eventsOptions) run(ctx context.Context) error {
	types, err := eventTypes(o.types)
	if err != nil {
		return err
	}
	var (
		kind v1alpha1.Kind
		name string
	)
	if o.forObject != "" {
		k, n, ok := strings.Cut(o.forObject, "/")
		var known bool
		kind, known = v1alpha1.KindForResource(k)
		if !ok || !known || n == "" || strings.Contains(n, "/") {
			return fmt.Errorf("--for %q: want TYPE/NAME with TYPE vminstance or vmdisk", o.forObject)
		}
		name = n
	}
	ns, _ := o.ns()
	if o.allNamespaces {
		if o.forObject != "" {
			return errors.New("--for names one object, in one namespace: it cannot be combined with -A")
		}
		ns = ""
	}
	c, err := o.client()
	if err != nil {
		return err
	}
	evs, err := c.ListEvents(ctx, ns, kind, name)
	if err != nil {
		return err
	}
	evs = slices.DeleteFunc(evs, func(e v1alpha1.Event) bool { return len(types) > 0 && !slices.Contains(types, e.Type) })
	if len(evs) == 0 {
		if ns == "" {
			fmt.Fprintln(o.streams.ErrOut, "No events found.")
		} else {
			fmt.Fprintf(o.streams.ErrOut, "No events found in %s namespace.\n", ns)
		}
		return nil
	}
	printEvents(o.streams.Out, evs, o.allNamespaces, o.now())
	return nil
}

// eventTypes validates --types, accepting any letter case as kubectl does.
func eventTypes(in []string) ([]string, error) {
	var out []string
	for _, t := range in {
		switch {
		case strings.EqualFold(t, v1alpha1.EventTypeNormal):
			out = append(out, v1alpha1.EventTypeNormal)
		case strings.EqualFold(t, v1alpha1.EventTypeWarning):
			out = append(out, v1alpha1.EventTypeWarning)
		default:
			return nil, fmt.Errorf("--types %q: want Normal or Warning", t)
		}
	}
	return out, nil
}

// printEvents writes kubectl events' table: LAST SEEN, TYPE, REASON,
// OBJECT, MESSAGE (NAMESPACE first with -A).
func printEvents(w io.Writer, evs []v1alpha1.Event, withNamespace bool, now time.Time) {
	tw := newTabWriter(w)
	if withNamespace {
		fmt.Fprint(tw, "NAMESPACE\t")
	}
	fmt.Fprintln(tw, "LAST SEEN\tTYPE\tREASON\tOBJECT\tMESSAGE")
	for _, e := range evs {
		if withNamespace {
			fmt.Fprintf(tw, "%s\t", e.Namespace)
		}
		o := e.InvolvedObject
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s/%s\t%s\n", eventInterval(e, now), e.Type, e.Reason, o.Kind, o.Name, oneLine(e.Message))
	}
	_ = tw.Flush()
}

// eventInterval is how kubectl shows when an event happened: "2m", or
// "30s (x4 over 5m)" for a repeated one.
func eventInterval(e v1alpha1.Event, now time.Time) string {
	if e.Count > 1 {
		return fmt.Sprintf("%s (x%d over %s)", ageOf(&e.LastTimestamp, now), e.Count, ageOf(&e.FirstTimestamp, now))
	}
	first := e.FirstTimestamp
	if first.IsZero() {
		first = e.LastTimestamp
	}
	return ageOf(&first, now)
}

// describeEvents ends a description with the object's events, as kubectl
// describe does. Events of an earlier object of the same name (another
// uid) are left out. A daemon without events (older, or none wired) gets
// no section at all; any other failure is shown in place of the table so
// the rest of the description still prints.
func describeEvents(ctx context.Context, c *client.Client, w io.Writer, obj v1alpha1.Object, now time.Time) {
	m := obj.GetObjectMeta()
	evs, err := c.ListEvents(ctx, m.Namespace, obj.GetTypeMeta().Kind, m.Name)
	switch {
	case errors.Is(err, errdefs.ErrNotImplemented) || errors.Is(err, errdefs.ErrNotFound):
		return
	case err != nil:
		fmt.Fprintf(w, "Events:  <unavailable: %v>\n", err)
		return
	}
	evs = slices.DeleteFunc(evs, func(e v1alpha1.Event) bool {
		return m.UID != "" && e.InvolvedObject.UID != "" && e.InvolvedObject.UID != m.UID
	})
	if len(evs) == 0 {
		fmt.Fprintln(w, "Events:  <none>")
		return
	}
	fmt.Fprintln(w, "Events:")
	tw := newTabWriter(w)
	fmt.Fprintln(tw, "  TYPE\tREASON\tAGE\tFROM\tMESSAGE")
	for _, e := range evs {
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", e.Type, e.Reason, eventInterval(e, now), orNone(e.Source.Component), oneLine(e.Message))
	}
	_ = tw.Flush()
}
