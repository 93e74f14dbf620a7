package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/vmdhq/vmd/internal/client"
	"github.com/vmdhq/vmd/internal/errdefs"
	"github.com/vmdhq/vmd/internal/manifest"
)

// Values of --dry-run.
const (
	dryRunNone   = "none"
	dryRunServer = "server"
	dryRunClient = "client"
)

type applyOptions struct {
	*rootOptions
	filenames []string
	recursive bool
	dryRun    string
}

func newApplyCmd(root *rootOptions) *cobra.Command {
	o := &applyOptions{rootOptions: root}
	cmd := &cobra.Command{
		Use:   "apply -f FILENAME [-f FILENAME...]",
		Short: "Create or update objects from manifests",
		Long: `Apply VMInstance and VMDisk manifests (multi-document YAML or JSON) by
server-side apply: objects that do not exist are created, others updated.

-f takes a file, a directory (its *.yaml, *.yml and *.json files in name
order; with -R also its subdirectories) or - for standard input. Documents
are applied in order; an error in one does not stop the others, but makes
vmctl exit non-zero.`,
		Example: `  vmctl apply -f examples/ubuntu.yaml
  vmctl apply -f manifests/ -R
  cat vm.yaml | vmctl apply -f -
  vmctl apply -f vm.yaml --dry-run=server`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.run(cmd.Context())
		},
	}
	f := cmd.Flags()
	f.StringSliceVarP(&o.filenames, "filename", "f", nil, "file, directory or - (stdin) holding manifests")
	f.BoolVarP(&o.recursive, "recursive", "R", false, "also read subdirectories of directories given with -f")
	f.StringVar(&o.dryRun, "dry-run", dryRunNone, `"server" validates on the server without storing; "client" only checks locally`)
	f.Lookup("dry-run").NoOptDefVal = dryRunClient
	_ = cmd.MarkFlagRequired("filename")
	_ = cmd.MarkFlagFilename("filename", "yaml", "yml", "json")
	_ = cmd.RegisterFlagCompletionFunc("dry-run", cobra.FixedCompletions([]string{dryRunNone, dryRunServer, dryRunClient}, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

func validDryRun(v string) error {
	switch v {
	case dryRunNone, dryRunServer, dryRunClient:
		return nil
	}
	return fmt.Errorf(`invalid --dry-run value %q: must be "none", "server" or "client"`, v)
}

// source is one manifest stream: a file or stdin.
type source struct {
	name string // as shown in messages
	data []byte
}

// readSources expands -f values into manifest streams, in order.
func readSources(filenames []string, recursive bool, stdin io.Reader) ([]source, error) {
	var out []source
	usedStdin := false
	for _, fn := range filenames {
		if fn == "-" {
			if usedStdin {
				return nil, errors.New("-f - may be given only once")
			}
			usedStdin = true
			data, err := io.ReadAll(stdin)
			if err != nil {
				return nil, fmt.Errorf("reading standard input: %w", err)
			}
			out = append(out, source{name: "STDIN", data: data})
			continue
		}
		fi, err := os.Stat(fn)
		if err != nil {
			return nil, fmt.Errorf("the path %q does not exist", fn)
		}
		if !fi.IsDir() {
			data, err := os.ReadFile(fn)
			if err != nil {
				return nil, fmt.Errorf("reading %s: %w", fn, err)
			}
			out = append(out, source{name: fn, data: data})
			continue
		}
		files, err := manifestFiles(fn, recursive)
		if err != nil {
			return nil, err
		}
		for _, p := range files {
			data, err := os.ReadFile(p)
			if err != nil {
				return nil, fmt.Errorf("reading %s: %w", p, err)
			}
			out = append(out, source{name: p, data: data})
		}
	}
	return out, nil
}

// manifestFiles lists the manifest files of dir sorted by path; with
// recursive, subdirectories too.
func manifestFiles(dir string, recursive bool) ([]string, error) {
	var files []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if p != dir && !recursive {
				return fs.SkipDir
			}
			return nil
		}
		switch strings.ToLower(filepath.Ext(p)) {
		case ".yaml", ".yml", ".json":
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading directory %s: %w", dir, err)
	}
	slices.Sort(files)
	return files, nil
}

func (o *applyOptions) run(ctx context.Context) error {
	if err := validDryRun(o.dryRun); err != nil {
		return err
	}
	sources, err := readSources(o.filenames, o.recursive, o.streams.In)
	if err != nil {
		return err
	}
	c, err := o.client()
	if err != nil {
		return err
	}
	failed := false
	applied := 0
	for _, src := range sources {
		docs, err := manifest.SplitDocuments(src.data)
		if err != nil {
			printError(o.streams.ErrOut, fmt.Errorf("%s: %w", src.name, err))
			failed = true
			continue
		}
		for _, doc := range docs {
			msg, err := o.applyDocument(ctx, c, doc)
			if err != nil {
				var ce *client.ConnectionError
				if errors.As(err, &ce) {
					// Every further document would fail the same way.
					return err
				}
				printError(o.streams.ErrOut, placeError(src.name, doc, err))
				failed = true
				continue
			}
			applied++
			fmt.Fprintln(o.streams.Out, msg)
		}
	}
	if !failed && applied == 0 {
		return errors.New("no objects passed to apply")
	}
	if failed {
		return errReported
	}
	return nil
}

// placeError adds the file and document to errors that do not already
// name the object (server errors name it; local ones do not).
func placeError(file string, doc manifest.Document, err error) error {
	if client.ReasonOf(err) != "" {
		return err
	}
	return fmt.Errorf("%s: document %d: %w", file, doc.Index+1, err)
}

// applyDocument applies one document and returns the line to print.
func (o *applyOptions) applyDocument(ctx context.Context, c *client.Client, doc manifest.Document) (string, error) {
	kind := doc.TypeMeta.Kind
	if kind == "" {
		return "", errors.New("kind is not set")
	}
	if kind.Plural() == "" {
		return "", fmt.Errorf("no matches for kind %q in version %q", kind, doc.TypeMeta.APIVersion)
	}
	if doc.Name == "" {
		return "", fmt.Errorf("%s: metadata.name is required", kind)
	}
	ns, explicit := o.ns()
	if doc.Namespace != "" {
		if explicit && doc.Namespace != ns {
			return "", fmt.Errorf("the namespace from the provided object %q does not match the namespace %q. You must pass '--namespace=%s' to perform this operation",
				doc.Namespace, ns, doc.Namespace)
		}
		ns = doc.Namespace
	}
	id := objectID(kind, doc.Name)
	if o.dryRun == dryRunClient {
		// Local checks only: the document must decode strictly. Whether
		// it would be created or configured needs one read.
		if _, err := manifest.Decode(doc.Raw); err != nil {
			return "", err
		}
		_, err := c.Get(ctx, kind, ns, doc.Name)
		switch {
		case err == nil:
			return id + " configured (dry run)", nil
		case errors.Is(err, errdefs.ErrNotFound):
			return id + " created (dry run)", nil
		}
		return "", err
	}
	_, result, err := c.Apply(ctx, kind, ns, doc.Name, doc.Raw, o.dryRun == dryRunServer)
	if err != nil {
		return "", err
	}
	msg := id + " " + string(result)
	if o.dryRun == dryRunServer {
		msg += " (server dry run)"
	}
	return msg, nil
}
