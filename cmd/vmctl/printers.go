package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/duration"
	"sigs.k8s.io/yaml"

	"github.com/vmdhq/vmd/api/v1alpha1"
)

// Output formats accepted by -o.
const (
	outputTable = ""
	outputWide  = "wide"
	outputYAML  = "yaml"
	outputJSON  = "json"
	outputName  = "name"
)

// none is what kubectl prints for an absent value.
const none = "<none>"

// tableOptions shape the table printer.
type tableOptions struct {
	wide bool
	// withNamespace adds a leading NAMESPACE column (get -A).
	withNamespace bool
	// withKind prefixes names with "vminstance/" when several kinds are
	// printed, as kubectl does.
	withKind bool
	now      time.Time
}

// newTabWriter uses kubectl's table layout: columns separated by at least
// three spaces.
func newTabWriter(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)
}

// tableHeader returns the column titles for kind.
func tableHeader(kind v1alpha1.Kind, o tableOptions) []string {
	var h []string
	if o.withNamespace {
		h = append(h, "NAMESPACE")
	}
	switch kind {
	case v1alpha1.KindVMInstance:
		h = append(h, "NAME", "PHASE", "TYPE", "PROFILE", "IP", "READY", "AGE")
		if o.wide {
			h = append(h, "RUNSTRATEGY", "DISKS", "EXTERNAL", "UUID")
		}
	case v1alpha1.KindVMDisk:
		h = append(h, "NAME", "PHASE", "PROGRESS", "SIZE", "CLASS", "SOURCE", "READY", "AGE")
		if o.wide {
			h = append(h, "PATH", "FORMAT")
		}
	}
	return h
}

// tableRow returns the cells of obj under tableHeader's columns.
func tableRow(obj v1alpha1.Object, o tableOptions) []string {
	m := obj.GetObjectMeta()
	var row []string
	if o.withNamespace {
		row = append(row, m.Namespace)
	}
	name := m.Name
	if o.withKind {
		name = objectID(obj.GetTypeMeta().Kind, name)
	}
	age := ageOf(m.CreationTimestamp, o.now)
	switch v := obj.(type) {
	case *v1alpha1.VMInstance:
		row = append(row, name, orNone(vmPhase(v)), vmType(v), vmProfile(v), vmIP(v), readyColumn(v.Status.Conditions), age)
		if o.wide {
			row = append(row, orNone(string(vmRunStrategy(v))), vmDisks(v), vmExternal(v), orNone(v.Status.UUID))
		}
	case *v1alpha1.VMDisk:
		progress := v.Status.Progress
		if progress == "" {
			progress = "N/A"
		}
		row = append(row, name, orNone(diskPhase(v)), progress, diskSize(v), orNone(v.Spec.StorageClass), diskSource(v), readyColumn(v.Status.Conditions), age)
		if o.wide {
			row = append(row, orNone(v.Status.Path), orNone(v.Status.Format))
		}
	}
	return row
}

// printTable writes objs (all of one kind) as a table; header false
// prints only rows (the rows of `get -w` after the first).
func printTable(w io.Writer, kind v1alpha1.Kind, objs []v1alpha1.Object, o tableOptions, header bool) error {
	tw := newTabWriter(w)
	if header {
		fmt.Fprintln(tw, strings.Join(tableHeader(kind, o), "\t"))
	}
	for _, obj := range objs {
		fmt.Fprintln(tw, strings.Join(tableRow(obj, o), "\t"))
	}
	return tw.Flush()
}

// ageOf formats the time since t like kubectl's AGE column.
func ageOf(t *v1alpha1.Time, now time.Time) string {
	if t == nil || t.IsZero() {
		return "<unknown>"
	}
	return duration.HumanDuration(now.Sub(t.Time))
}

// readyColumn is the Ready condition's status, or its reason when False
// (which says why: "NotImplemented", "ImportFailed"), as the READY column.
func readyColumn(conds []v1alpha1.Condition) string {
	c := v1alpha1.FindCondition(conds, v1alpha1.ConditionReady)
	switch {
	case c == nil:
		return "Unknown"
	case c.Status == v1alpha1.ConditionFalse && c.Reason != "":
		return c.Reason
	case c.Status == "":
		return "Unknown"
	}
	return string(c.Status)
}

func orNone(s string) string {
	if s == "" {
		return none
	}
	return s
}

func vmPhase(v *v1alpha1.VMInstance) string {
	if v.ObjectMeta.DeletionTimestamp != nil && v.Status.Phase == "" {
		return v1alpha1.PhaseTerminating
	}
	return v.Status.Phase
}

func diskPhase(d *v1alpha1.VMDisk) string {
	if d.ObjectMeta.DeletionTimestamp != nil && d.Status.Phase == "" {
		return v1alpha1.DiskPhaseDeleting
	}
	return d.Status.Phase
}

// vmType is the instance type in use (status), else the requested one;
// "custom" for explicit resources.
func vmType(v *v1alpha1.VMInstance) string {
	if v.Status.InstanceType != "" {
		return v.Status.InstanceType
	}
	if v.Spec.InstanceType == nil {
		return none
	}
	if *v.Spec.InstanceType == "" {
		return "custom"
	}
	return *v.Spec.InstanceType
}

func vmProfile(v *v1alpha1.VMInstance) string {
	if v.Status.Profile != "" {
		return v.Status.Profile
	}
	if v.Spec.InstanceProfile == nil {
		return none
	}
	return orNone(*v.Spec.InstanceProfile)
}

// vmRunStrategy folds the legacy running flag into a strategy, as the
// server's defaulting does, for objects that still carry it.
func vmRunStrategy(v *v1alpha1.VMInstance) v1alpha1.RunStrategy {
	switch {
	case v.Spec.RunStrategy != "":
		return v.Spec.RunStrategy
	case v.Spec.Running == nil:
		return ""
	case *v.Spec.Running:
		return v1alpha1.RunStrategyAlways
	}
	return v1alpha1.RunStrategyHalted
}

// vmIP is the first private address (the one to ssh to from the host),
// else the first address of any type.
func vmIP(v *v1alpha1.VMInstance) string {
	for _, a := range v.Status.Addresses {
		if strings.EqualFold(a.Type, "Private") {
			return a.Address
		}
	}
	if len(v.Status.Addresses) > 0 {
		return v.Status.Addresses[0].Address
	}
	return none
}

// vmExternal is the external address, "<pending>" while an external VM has
// none yet, and "<none>" for a VM that is not external.
func vmExternal(v *v1alpha1.VMInstance) string {
	for _, a := range v.Status.Addresses {
		if strings.EqualFold(a.Type, "External") {
			return a.Address
		}
	}
	if v.Spec.External != nil && *v.Spec.External {
		return "<pending>"
	}
	return none
}

func vmDisks(v *v1alpha1.VMInstance) string {
	if len(v.Spec.Disks) == 0 {
		return none
	}
	names := make([]string, len(v.Spec.Disks))
	for i, d := range v.Spec.Disks {
		names[i] = d.Name
	}
	return strings.Join(names, ",")
}

// diskSize is the volume's real virtual size once it exists, else the
// requested storage.
func diskSize(d *v1alpha1.VMDisk) string {
	if d.Status.Size > 0 {
		return resource.NewQuantity(d.Status.Size, resource.BinarySI).String()
	}
	return orNone(string(d.Spec.Storage))
}

// diskSource summarises the source in one short cell.
func diskSource(d *v1alpha1.VMDisk) string {
	s := d.Spec.Source
	switch s.Type() {
	case v1alpha1.SourceHTTP:
		if u, err := url.Parse(s.HTTP.URL); err == nil && u.Host != "" {
			return "http:" + u.Host
		}
		return "http"
	case v1alpha1.SourceImage:
		return "image:" + s.Image.Name
	case v1alpha1.SourceDisk:
		return "disk:" + s.Disk.Name
	case v1alpha1.SourceUpload:
		return "upload"
	}
	return "blank"
}

// printName writes "vminstance/web", the -o name form.
func printName(w io.Writer, obj v1alpha1.Object) {
	fmt.Fprintln(w, objectID(obj.GetTypeMeta().Kind, obj.GetObjectMeta().Name))
}

// listDocument is the wire form of `get -o yaml|json` for several objects:
// kubectl's generic v1 List.
type listDocument struct {
	APIVersion string            `json:"apiVersion"`
	Kind       string            `json:"kind"`
	Items      []v1alpha1.Object `json:"items"`
	Metadata   struct {
		ResourceVersion string `json:"resourceVersion"`
	} `json:"metadata"`
}

// printObjects writes objs as YAML or JSON: the object itself when single
// is set (one object asked for by name), else a List.
func printObjects(w io.Writer, format string, objs []v1alpha1.Object, single bool) error {
	if single && len(objs) == 1 {
		return encode(w, format, objs[0])
	}
	return encode(w, format, listDocument{APIVersion: "v1", Kind: "List", Items: append([]v1alpha1.Object{}, objs...)})
}

// encode writes v as indented JSON or as YAML.
func encode(w io.Writer, format string, v any) error {
	if format == outputJSON {
		data, err := json.MarshalIndent(v, "", "    ")
		if err != nil {
			return fmt.Errorf("encoding json: %w", err)
		}
		_, err = fmt.Fprintf(w, "%s\n", data)
		return err
	}
	data, err := yaml.Marshal(v)
	if err != nil {
		return fmt.Errorf("encoding yaml: %w", err)
	}
	_, err = w.Write(data)
	return err
}

// validOutput checks the -o value for commands that print objects.
func validOutput(format string) error {
	switch format {
	case outputTable, outputWide, outputYAML, outputJSON, outputName:
		return nil
	}
	return fmt.Errorf("unable to match a printer suitable for the output format %q, allowed formats are: json,name,wide,yaml", format)
}
