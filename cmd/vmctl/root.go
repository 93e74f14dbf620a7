package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/vmdhq/vmd/api/v1alpha1"
	"github.com/vmdhq/vmd/internal/client"
	"github.com/vmdhq/vmd/internal/errdefs"
)

// IOStreams are the standard streams a command uses, injected so tests
// can capture output.
type IOStreams struct {
	In     io.Reader
	Out    io.Writer
	ErrOut io.Writer
}

// clientFactory builds the API client from the global flags; tests pass
// one that ignores the socket and points at a fake server.
type clientFactory func(client.Options) (*client.Client, error)

// rootOptions are the global flags and shared plumbing of every command.
type rootOptions struct {
	streams   IOStreams
	newClient clientFactory
	// now is the clock used for AGE columns (fixed in tests).
	now func() time.Time

	socket         string
	server         string
	namespace      string
	requestTimeout time.Duration

	cmd *cobra.Command // the root, to ask whether -n was given
}

// newRootCmd builds the vmctl command tree. now is the clock for AGE
// columns (time.Now; fixed in tests).
func newRootCmd(streams IOStreams, newClient clientFactory, now func() time.Time) *cobra.Command {
	o := &rootOptions{streams: streams, newClient: newClient, now: now}
	cmd := &cobra.Command{
		Use:   "vmctl",
		Short: "vmctl controls the vmd virtual machine daemon",
		Long: `vmctl controls vmd, which runs VMInstance and VMDisk objects
(apps.cozystack.io/v1alpha1, the Hikube / Cozystack API) as libvirt
virtual machines on this host.

Find more information at the vmd README.`,
		SilenceErrors: true,
		SilenceUsage:  true,
	}
	o.cmd = cmd
	cmd.SetIn(streams.In)
	cmd.SetOut(streams.Out)
	cmd.SetErr(streams.ErrOut)

	pf := cmd.PersistentFlags()
	pf.StringVar(&o.socket, "socket", "", "path of vmd's unix socket (default $"+client.SocketEnv+" or "+client.DefaultSocket+")")
	pf.StringVar(&o.server, "server", "", "talk to vmd at this http(s) URL instead of the unix socket")
	pf.StringVarP(&o.namespace, "namespace", "n", "", "namespace (tenant) of the objects (default \"default\")")
	pf.DurationVar(&o.requestTimeout, "request-timeout", 0, "time limit of each API request (0 = none)")
	_ = cmd.RegisterFlagCompletionFunc("namespace", cobra.NoFileCompletions)

	cmd.AddCommand(
		newApplyCmd(o),
		newGetCmd(o),
		newDescribeCmd(o),
		newDeleteCmd(o),
		newWaitCmd(o),
		newStartCmd(o),
		newStopCmd(o),
		newRestartCmd(o),
		newConsoleCmd(o),
		newLogsCmd(o),
		newVNCCmd(o),
		newSSHCmd(o),
		newEventsCmd(o),
		newUploadCmd(o),
		newImageCmd(o),
		newVersionCmd(o),
		newCompletionCmd(o),
	)
	return cmd
}

// client builds the API client from the global flags.
func (o *rootOptions) client() (*client.Client, error) {
	socket := o.socket
	if socket == "" {
		socket = os.Getenv(client.SocketEnv)
	}
	return o.newClient(client.Options{
		Socket:    socket,
		Server:    o.server,
		Timeout:   o.requestTimeout,
		UserAgent: "vmctl/" + clientVersion(),
	})
}

// ns returns the namespace to use and whether the user chose it with -n.
func (o *rootOptions) ns() (string, bool) {
	if o.namespace == "" {
		return v1alpha1.DefaultNamespace, false
	}
	return o.namespace, o.cmd.PersistentFlags().Changed("namespace")
}

// resourceRef names objects of one kind: all of them (names empty) or
// the named ones.
type resourceRef struct {
	kind  v1alpha1.Kind
	names []string
}

// parseResourceArgs reads kubectl-style resource arguments:
//
//	TYPE[,TYPE...] [NAME...]   (TYPE may be "all")
//	TYPE/NAME [TYPE/NAME...]
func parseResourceArgs(args []string) ([]resourceRef, error) {
	if len(args) == 0 {
		return nil, errors.New("you must specify the type of resource: one of vminstances (vmi), vmdisks (vmd), all")
	}
	if strings.Contains(args[0], "/") {
		var refs []resourceRef
		for _, a := range args {
			typ, name, ok := strings.Cut(a, "/")
			if !ok || name == "" || strings.Contains(name, "/") {
				return nil, fmt.Errorf("there is no need to specify a resource type as a separate argument when passing arguments in resource/name form (e.g. 'vmctl get vmi/web'), got %q", a)
			}
			kind, err := kindFor(typ)
			if err != nil {
				return nil, err
			}
			// Merge consecutive names of one kind, keeping order.
			if n := len(refs); n > 0 && refs[n-1].kind == kind {
				refs[n-1].names = append(refs[n-1].names, name)
				continue
			}
			refs = append(refs, resourceRef{kind: kind, names: []string{name}})
		}
		return refs, nil
	}
	var kinds []v1alpha1.Kind
	for _, typ := range strings.Split(args[0], ",") {
		if typ == "all" {
			kinds = append(kinds, v1alpha1.Kinds...)
			continue
		}
		kind, err := kindFor(typ)
		if err != nil {
			return nil, err
		}
		kinds = append(kinds, kind)
	}
	var refs []resourceRef
	for _, k := range kinds {
		if slices.ContainsFunc(refs, func(r resourceRef) bool { return r.kind == k }) {
			continue
		}
		refs = append(refs, resourceRef{kind: k, names: args[1:]})
	}
	return refs, nil
}

// kindFor resolves a resource name typed by the user.
func kindFor(typ string) (v1alpha1.Kind, error) {
	kind, ok := v1alpha1.KindForResource(strings.ToLower(typ))
	if !ok {
		kind, ok = v1alpha1.KindForResource(typ)
	}
	if !ok {
		return "", fmt.Errorf("the server doesn't have a resource type %q (known: vminstances (vmi), vmdisks (vmd))", typ)
	}
	return kind, nil
}

// singular is the lowercase kind used in kubectl-style messages
// ("vminstance/web created").
func singular(kind v1alpha1.Kind) string { return strings.ToLower(string(kind)) }

// objectID is the "vminstance/web" form used in messages.
func objectID(kind v1alpha1.Kind, name string) string { return singular(kind) + "/" + name }

// notFound rewrites a NotFound error in kubectl's words, naming the
// resource the user asked for rather than the server's internal key.
func notFound(err error, kind v1alpha1.Kind, name string) error {
	if !errors.Is(err, errdefs.ErrNotFound) {
		return err
	}
	return client.NewStatusError(v1alpha1.Status{
		Status: "Failure", Code: 404, Reason: v1alpha1.StatusReasonNotFound,
		Message: fmt.Sprintf("%s %q not found", kind.Plural(), name),
	})
}
