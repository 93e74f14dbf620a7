package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/vmdhq/vmd/api/v1alpha1"
	"github.com/vmdhq/vmd/internal/client"
	"github.com/vmdhq/vmd/internal/errdefs"
	"github.com/vmdhq/vmd/internal/manifest"
)

type deleteOptions struct {
	*rootOptions
	filenames      []string
	recursive      bool
	wait           bool
	timeout        time.Duration
	dryRun         string
	ignoreNotFound bool
}

func newDeleteCmd(root *rootOptions) *cobra.Command {
	o := &deleteOptions{rootOptions: root}
	cmd := &cobra.Command{
		Use:   "delete (-f FILENAME | TYPE NAME... | TYPE/NAME...)",
		Short: "Delete VMInstances and VMDisks",
		Long: `Delete objects by type and name, or those described in manifests.

vmd releases what an object holds on the host (domain, volume, addresses)
before the object disappears. By default vmctl waits for that (--wait);
with --wait=false it returns once deletion was requested.`,
		Example: `  vmctl delete vmi web
  vmctl delete vmd/ubuntu vmd/data
  vmctl delete -f examples/ubuntu.yaml --timeout=2m`,
		ValidArgsFunction: completeResources(root),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.run(cmd.Context(), args)
		},
	}
	f := cmd.Flags()
	f.StringSliceVarP(&o.filenames, "filename", "f", nil, "file, directory or - (stdin) holding the manifests of the objects to delete")
	f.BoolVarP(&o.recursive, "recursive", "R", false, "also read subdirectories of directories given with -f")
	f.BoolVar(&o.wait, "wait", true, "wait until the objects are gone")
	f.DurationVar(&o.timeout, "timeout", 0, "give up waiting after this long (0 = wait as long as it takes)")
	f.StringVar(&o.dryRun, "dry-run", dryRunNone, `"server" checks the deletion on the server without doing it; "client" only prints`)
	f.Lookup("dry-run").NoOptDefVal = dryRunClient
	f.BoolVar(&o.ignoreNotFound, "ignore-not-found", false, "treat objects that do not exist as deleted")
	_ = cmd.MarkFlagFilename("filename", "yaml", "yml", "json")
	return cmd
}

// target is one object to act on.
type target struct {
	kind      v1alpha1.Kind
	namespace string
	name      string
}

func (t target) String() string { return t.kind.Plural() + "/" + t.name }

// targetsFromFiles reads the identity of every document in the manifests.
func (o *rootOptions) targetsFromFiles(filenames []string, recursive bool) ([]target, error) {
	sources, err := readSources(filenames, recursive, o.streams.In)
	if err != nil {
		return nil, err
	}
	ns, explicit := o.ns()
	var out []target
	for _, src := range sources {
		docs, err := manifest.SplitDocuments(src.data)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", src.name, err)
		}
		for _, doc := range docs {
			if doc.TypeMeta.Kind.Plural() == "" || doc.Name == "" {
				return nil, fmt.Errorf("%s: document %d: kind and metadata.name are required", src.name, doc.Index+1)
			}
			t := target{kind: doc.TypeMeta.Kind, namespace: ns, name: doc.Name}
			if doc.Namespace != "" {
				if explicit && doc.Namespace != ns {
					return nil, fmt.Errorf("%s: document %d: the namespace from the provided object %q does not match the namespace %q",
						src.name, doc.Index+1, doc.Namespace, ns)
				}
				t.namespace = doc.Namespace
			}
			out = append(out, t)
		}
	}
	return out, nil
}

// targetsFromArgs turns TYPE NAME... or TYPE/NAME... into targets; every
// type must come with names.
func (o *rootOptions) targetsFromArgs(args []string) ([]target, error) {
	refs, err := parseResourceArgs(args)
	if err != nil {
		return nil, err
	}
	ns, _ := o.ns()
	var out []target
	for _, ref := range refs {
		if len(ref.names) == 0 {
			return nil, fmt.Errorf("resource(s) were provided, but no name was specified")
		}
		for _, n := range ref.names {
			out = append(out, target{kind: ref.kind, namespace: ns, name: n})
		}
	}
	return out, nil
}

func (o *deleteOptions) run(ctx context.Context, args []string) error {
	if err := validDryRun(o.dryRun); err != nil {
		return err
	}
	var targets []target
	var err error
	switch {
	case len(o.filenames) > 0 && len(args) > 0:
		return errors.New("give either -f or resource arguments, not both")
	case len(o.filenames) > 0:
		targets, err = o.targetsFromFiles(o.filenames, o.recursive)
	default:
		targets, err = o.targetsFromArgs(args)
	}
	if err != nil {
		return err
	}
	c, err := o.client()
	if err != nil {
		return err
	}

	type pending struct {
		target
		uid string
	}
	var waits []pending
	failed := false
	for _, t := range targets {
		obj, err := o.deleteOne(ctx, c, t)
		if err != nil {
			if errors.Is(err, errdefs.ErrNotFound) && o.ignoreNotFound {
				continue
			}
			var ce *client.ConnectionError
			if errors.As(err, &ce) {
				return err
			}
			printError(o.streams.ErrOut, notFound(err, t.kind, t.name))
			failed = true
			continue
		}
		suffix := ""
		switch o.dryRun {
		case dryRunServer:
			suffix = " (server dry run)"
		case dryRunClient:
			suffix = " (dry run)"
		}
		fmt.Fprintf(o.streams.Out, "%s %q deleted%s\n", singular(t.kind), t.name, suffix)
		if o.wait && o.dryRun == dryRunNone && obj != nil {
			waits = append(waits, pending{target: t, uid: obj.GetObjectMeta().UID})
		}
	}

	if len(waits) > 0 {
		wctx, cancel := ctx, context.CancelFunc(func() {})
		if o.timeout > 0 {
			wctx, cancel = context.WithTimeout(ctx, o.timeout)
		}
		defer cancel()
		for _, p := range waits {
			err := c.WaitForDeletion(wctx, p.kind, p.namespace, p.name, p.uid)
			if err == nil {
				continue
			}
			if errors.Is(wctx.Err(), context.DeadlineExceeded) {
				printError(o.streams.ErrOut, fmt.Errorf("timed out waiting for the condition on %s", p.target))
				return errReported
			}
			return err
		}
	}
	if failed {
		return errReported
	}
	return nil
}

// deleteOne deletes (or, in client dry run, only looks up) one object and
// returns the object as the server left it (nil once it is already gone).
func (o *deleteOptions) deleteOne(ctx context.Context, c *client.Client, t target) (v1alpha1.Object, error) {
	if o.dryRun == dryRunClient {
		return c.Get(ctx, t.kind, t.namespace, t.name)
	}
	var opts []client.WriteOption
	if o.dryRun == dryRunServer {
		opts = append(opts, client.DryRun())
	}
	return c.Delete(ctx, t.kind, t.namespace, t.name, opts...)
}
