package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/vmdhq/vmd/api/v1alpha1"
	"github.com/vmdhq/vmd/internal/errdefs"
)

func newDescribeCmd(root *rootOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "describe (TYPE [NAME...] | TYPE/NAME...)",
		Short: "Show details of VMInstances or VMDisks",
		Long: `Print a detailed, human-readable description of objects: metadata, the
important parts of the spec, status and conditions. Without NAME, every
object of the type in the namespace is described.`,
		Example: `  vmctl describe vmi web
  vmctl describe vmd/ubuntu`,
		Args:              cobra.MinimumNArgs(1),
		ValidArgsFunction: completeResources(root),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runDescribe(cmd.Context(), root, args)
		},
	}
	return cmd
}

func runDescribe(ctx context.Context, o *rootOptions, args []string) error {
	refs, err := parseResourceArgs(args)
	if err != nil {
		return err
	}
	c, err := o.client()
	if err != nil {
		return err
	}
	ns, _ := o.ns()
	now := o.now()
	failed := false
	first := true
	show := func(obj v1alpha1.Object) {
		if !first {
			fmt.Fprintln(o.streams.Out)
		}
		first = false
		describe(o.streams.Out, obj, now)
		describeEvents(ctx, c, o.streams.Out, obj, now)
	}
	for _, ref := range refs {
		if len(ref.names) == 0 {
			list, err := c.List(ctx, ref.kind, ns)
			if err != nil {
				return err
			}
			for _, obj := range list.Items {
				show(obj)
			}
			continue
		}
		for _, name := range ref.names {
			obj, err := c.Get(ctx, ref.kind, ns, name)
			if err != nil {
				if !errors.Is(err, errdefs.ErrNotFound) {
					return err
				}
				printError(o.streams.ErrOut, notFound(err, ref.kind, name))
				failed = true
				continue
			}
			show(obj)
		}
	}
	if failed {
		return errReported
	}
	return nil
}

// describer writes "Key:  value" lines aligned per block, kubectl style.
type describer struct {
	w   io.Writer
	buf []describeLine
}

type describeLine struct {
	indent int
	key    string
	value  string // "" for a section title
}

func (d *describer) kv(indent int, key, value string) {
	d.buf = append(d.buf, describeLine{indent: indent, key: key, value: value})
}

func (d *describer) section(indent int, key string) {
	d.buf = append(d.buf, describeLine{indent: indent, key: key})
}

// flush aligns every value at one column, like kubectl's describe.
func (d *describer) flush() {
	width := 0
	for _, l := range d.buf {
		if l.value != "" {
			width = max(width, 2*l.indent+len(l.key)+1)
		}
	}
	for _, l := range d.buf {
		label := strings.Repeat("  ", l.indent) + l.key + ":"
		if l.value == "" {
			fmt.Fprintln(d.w, label)
			continue
		}
		fmt.Fprintf(d.w, "%-*s  %s\n", width, label, l.value)
	}
	d.buf = nil
}

// describe prints obj's description.
func describe(w io.Writer, obj v1alpha1.Object, now time.Time) {
	d := &describer{w: w}
	m := obj.GetObjectMeta()
	d.kv(0, "Name", m.Name)
	d.kv(0, "Namespace", m.Namespace)
	d.kv(0, "Kind", string(obj.GetTypeMeta().Kind))
	d.kv(0, "Labels", mapLines(m.Labels))
	d.kv(0, "Annotations", mapLines(m.Annotations))
	d.kv(0, "UID", orNone(m.UID))
	d.kv(0, "Generation", strconv.FormatInt(m.Generation, 10))
	d.kv(0, "Resource Version", orNone(m.ResourceVersion))
	d.kv(0, "Created", timeWithAge(m.CreationTimestamp, now))
	if m.DeletionTimestamp != nil {
		d.kv(0, "Deletion Requested", timeWithAge(m.DeletionTimestamp, now))
	}
	if len(m.Finalizers) > 0 {
		d.kv(0, "Finalizers", strings.Join(m.Finalizers, ", "))
	}
	switch v := obj.(type) {
	case *v1alpha1.VMInstance:
		describeVMInstance(d, v)
	case *v1alpha1.VMDisk:
		describeVMDisk(d, v)
	}
	d.flush()
	describeConditions(w, obj.GetConditions(), now)
}

func describeVMInstance(d *describer, v *v1alpha1.VMInstance) {
	s := v.Spec
	d.section(0, "Spec")
	d.kv(1, "Run Strategy", orNone(string(vmRunStrategy(v))))
	if s.InstanceType != nil && *s.InstanceType == "" {
		d.kv(1, "Instance Type", "custom")
	} else {
		d.kv(1, "Instance Type", derefOr(s.InstanceType, none))
	}
	if !s.Resources.IsEmpty() {
		r := s.Resources
		d.kv(1, "Resources", fmt.Sprintf("cpu=%s sockets=%s memory=%s", orNone(string(r.CPU)), orNone(string(r.Sockets)), orNone(string(r.Memory))))
	}
	d.kv(1, "Instance Profile", derefOr(s.InstanceProfile, none))
	var disks []string
	for _, dr := range s.Disks {
		if dr.Bus != "" {
			disks = append(disks, dr.Name+" ("+dr.Bus+")")
		} else {
			disks = append(disks, dr.Name)
		}
	}
	d.kv(1, "Disks", joinOrNone(disks))
	external := "false"
	if s.External != nil && *s.External {
		method := s.ExternalMethod
		if method == "" {
			method = v1alpha1.ExternalMethodPortList
		}
		external = "true (" + string(method)
		if method == v1alpha1.ExternalMethodPortList {
			ports := make([]string, len(s.ExternalPorts))
			for i, p := range s.ExternalPorts {
				ports[i] = strconv.Itoa(p)
			}
			external += ", ports " + joinOrNone(ports)
			if s.ExternalAllowICMP == nil || *s.ExternalAllowICMP {
				external += ", ICMP allowed"
			}
		}
		external += ")"
	}
	d.kv(1, "External", external)
	var nets []string
	for _, n := range s.Networks {
		nets = append(nets, n.Name)
	}
	for _, n := range s.Subnets {
		nets = append(nets, n.Name+" (subnets)")
	}
	if len(nets) > 0 {
		d.kv(1, "Networks", strings.Join(nets, ", "))
	}
	if len(s.GPUs) > 0 {
		var gpus []string
		for _, g := range s.GPUs {
			gpus = append(gpus, g.Name)
		}
		d.kv(1, "GPUs", strings.Join(gpus, ", "))
	}
	if s.CPUModel != "" {
		d.kv(1, "CPU Model", s.CPUModel)
	}
	d.kv(1, "SSH Keys", strconv.Itoa(len(s.SSHKeys)))
	if s.CloudInit != "" {
		d.kv(1, "Cloud-Init", fmt.Sprintf("%d bytes", len(s.CloudInit)))
	} else {
		d.kv(1, "Cloud-Init", none)
	}
	if s.CloudInitSeed != "" {
		d.kv(1, "Cloud-Init Seed", s.CloudInitSeed)
	}

	st := v.Status
	d.section(0, "Status")
	d.kv(1, "Phase", orNone(vmPhase(v)))
	d.kv(1, "Observed Generation", strconv.FormatInt(st.ObservedGeneration, 10))
	d.kv(1, "Instance Type", orNone(st.InstanceType))
	d.kv(1, "Profile", orNone(st.Profile))
	d.kv(1, "Domain", orNone(st.DomainName))
	d.kv(1, "UUID", orNone(st.UUID))
	var addrs []string
	for _, a := range st.Addresses {
		s := a.Address + " (" + a.Type
		if a.MAC != "" {
			s += ", " + a.MAC
		}
		addrs = append(addrs, s+")")
	}
	d.kv(1, "Addresses", joinOrNone(addrs))
	if st.RestartCount > 0 {
		d.kv(1, "Restart Count", strconv.Itoa(int(st.RestartCount)))
	}
}

func describeVMDisk(d *describer, v *v1alpha1.VMDisk) {
	s := v.Spec
	d.section(0, "Spec")
	src := s.Source
	switch src.Type() {
	case v1alpha1.SourceHTTP:
		d.kv(1, "Source", "http "+src.HTTP.URL)
		if src.HTTP.SHA256 != "" {
			d.kv(1, "Expected SHA256", src.HTTP.SHA256)
		}
	case v1alpha1.SourceImage:
		d.kv(1, "Source", "image "+src.Image.Name)
	case v1alpha1.SourceDisk:
		d.kv(1, "Source", "clone of vmdisk "+src.Disk.Name)
	case v1alpha1.SourceUpload:
		d.kv(1, "Source", "upload")
	default:
		d.kv(1, "Source", "blank")
	}
	d.kv(1, "Optical", strconv.FormatBool(s.Optical != nil && *s.Optical))
	d.kv(1, "Storage", orNone(string(s.Storage)))
	d.kv(1, "Storage Class", orNone(s.StorageClass))

	st := v.Status
	d.section(0, "Status")
	d.kv(1, "Phase", orNone(diskPhase(v)))
	d.kv(1, "Observed Generation", strconv.FormatInt(st.ObservedGeneration, 10))
	if st.Progress != "" || st.BytesTotal > 0 {
		p := orNone(st.Progress)
		if st.BytesTotal > 0 {
			p += fmt.Sprintf(" (%d of %d bytes)", st.BytesDone, st.BytesTotal)
		}
		d.kv(1, "Progress", p)
	}
	if st.Size > 0 {
		d.kv(1, "Size", diskSize(v))
	}
	d.kv(1, "Format", orNone(st.Format))
	d.kv(1, "Path", orNone(st.Path))
	if st.BackingFile != "" {
		d.kv(1, "Backing File", st.BackingFile+" ("+st.BackingFormat+", read-only, shared)")
	}
	if st.SHA256 != "" {
		d.kv(1, "SHA256", st.SHA256)
	}
	d.kv(1, "Used By", joinOrNone(st.UsedBy))
}

// describeConditions prints the conditions table.
func describeConditions(w io.Writer, conds []v1alpha1.Condition, now time.Time) {
	if len(conds) == 0 {
		fmt.Fprintln(w, "Conditions:  <none>")
		return
	}
	fmt.Fprintln(w, "Conditions:")
	tw := newTabWriter(w)
	fmt.Fprintln(tw, "  TYPE\tSTATUS\tREASON\tMESSAGE\tAGE")
	for _, c := range conds {
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", c.Type, c.Status, orNone(c.Reason), orNone(oneLine(c.Message)), ageOf(c.LastTransitionTime, now))
	}
	_ = tw.Flush()
}

// oneLine keeps a table cell on one line.
func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

func mapLines(m map[string]string) string {
	if len(m) == 0 {
		return none
	}
	keys := slices.Sorted(maps.Keys(m))
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + m[k]
	}
	return strings.Join(parts, ", ")
}

func timeWithAge(t *v1alpha1.Time, now time.Time) string {
	if t == nil || t.IsZero() {
		return none
	}
	return t.UTC().Format(time.RFC3339) + " (" + ageOf(t, now) + " ago)"
}

func derefOr(p *string, def string) string {
	if p == nil || *p == "" {
		return def
	}
	return *p
}

func joinOrNone(s []string) string {
	if len(s) == 0 {
		return none
	}
	return strings.Join(s, ", ")
}
