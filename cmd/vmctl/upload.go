package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/vmdhq/vmd/api/v1alpha1"
	"github.com/vmdhq/vmd/internal/client"
	"github.com/vmdhq/vmd/internal/errdefs"
)

type uploadOptions struct {
	*rootOptions
	imagePath  string
	noProgress bool
	wait       bool
	timeout    time.Duration
	// interval is the plain-progress period (shortened in tests).
	interval time.Duration
}

func newUploadCmd(root *rootOptions) *cobra.Command {
	o := &uploadOptions{rootOptions: root, interval: defaultProgressInterval}
	cmd := &cobra.Command{
		Use:   "upload vmdisk NAME --image-path FILE",
		Short: "Upload a disk image into a VMDisk whose source is upload",
		Long: `Stream a local disk image into a VMDisk created with

  spec:
    source:
      upload: {}

vmd recognises the format from the bytes (qcow2, raw, iso, vmdk, vhd, vhdx,
vdi; gzip or xz compressed), refuses hostile images, and converts the data
into the disk's volume, as for an http import.

A progress bar (bytes, rate, ETA) is drawn on a terminal; otherwise, or with
--no-progress, a plain line is printed every few seconds. The command then
waits for the disk to become Ready (--wait=false returns once the data is
stored). --image-path - reads the image from standard input.`,
		Example: `  vmctl upload vmdisk win-iso --image-path ./Win11_24H2.iso
  vmctl upload vmd/data -n team --image-path disk.qcow2 --no-progress
  xz -dc disk.raw.xz | vmctl upload vmdisk data --image-path -`,
		Args:              cobra.RangeArgs(1, 2),
		ValidArgsFunction: completeResources(root),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.run(cmd.Context(), args)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.imagePath, "image-path", "", "the image file to upload (- for standard input)")
	f.BoolVar(&o.noProgress, "no-progress", false, "print plain progress lines instead of a bar")
	f.BoolVar(&o.wait, "wait", true, "wait for the disk to become Ready after the upload")
	f.DurationVar(&o.timeout, "timeout", 10*time.Minute, "how long to wait for Ready after the upload (the upload itself is not limited)")
	_ = cmd.MarkFlagRequired("image-path")
	_ = cmd.MarkFlagFilename("image-path")
	return cmd
}

// uploadTarget reads "vmdisk NAME" or "vmdisk/NAME".
func uploadTarget(args []string) (string, error) {
	typ, name := "", ""
	switch {
	case len(args) == 1 && strings.Contains(args[0], "/"):
		typ, name, _ = strings.Cut(args[0], "/")
	case len(args) == 2:
		typ, name = args[0], args[1]
	default:
		return "", errors.New("upload needs a disk: vmctl upload vmdisk NAME --image-path FILE")
	}
	kind, err := kindFor(typ)
	if err != nil {
		return "", err
	}
	if kind != v1alpha1.KindVMDisk {
		return "", fmt.Errorf("only vmdisks take uploads, not %s", kind.Plural())
	}
	if name == "" || strings.Contains(name, "/") {
		return "", fmt.Errorf("invalid disk name %q", name)
	}
	return name, nil
}

// openImage opens the image and returns its size (-1 when unknown: a
// pipe or a device) and a closer.
func (o *uploadOptions) openImage() (io.Reader, int64, func(), error) {
	if o.imagePath == "-" {
		return o.streams.In, -1, func() {}, nil
	}
	f, err := os.Open(o.imagePath)
	if err != nil {
		return nil, 0, nil, fmt.Errorf("opening image: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return nil, 0, nil, fmt.Errorf("opening image: %w", err)
	}
	switch {
	case fi.IsDir():
		_ = f.Close()
		return nil, 0, nil, fmt.Errorf("opening image: %s is a directory", o.imagePath)
	case fi.Mode().IsRegular():
		return f, fi.Size(), func() { _ = f.Close() }, nil
	}
	return f, -1, func() { _ = f.Close() }, nil
}

func (o *uploadOptions) run(ctx context.Context, args []string) error {
	name, err := uploadTarget(args)
	if err != nil {
		return err
	}
	ns, _ := o.ns()
	id := objectID(v1alpha1.KindVMDisk, name)
	c, err := o.client()
	if err != nil {
		return err
	}

	// Check the disk first: the server refuses too, but this way the
	// user gets the reason before a file is even opened.
	obj, err := c.Get(ctx, v1alpha1.KindVMDisk, ns, name)
	if err != nil {
		return notFound(err, v1alpha1.KindVMDisk, name)
	}
	disk := obj.(*v1alpha1.VMDisk)
	if disk.Spec.Source.Upload == nil {
		return fmt.Errorf("%s does not accept uploads: its source is %s; only a disk created with \"source: {upload: {}}\" waits for data",
			id, disk.Spec.Source.Type())
	}

	img, size, closeImage, err := o.openImage()
	if err != nil {
		return err
	}
	defer closeImage()

	start := o.now()
	bar := !o.noProgress && isTerminal(o.streams.ErrOut)
	if !bar {
		fmt.Fprintf(o.streams.ErrOut, "uploading %s (%s) to %s\n", o.imageLabel(), sizeLabel(size), id)
	}
	p := newProgress(o.streams.ErrOut, progressOptions{label: id, total: size, bar: bar, interval: o.interval, now: o.now})
	res, err := c.Upload(ctx, ns, name, io.TeeReader(img, p), size)
	p.finish(err == nil)
	if err != nil {
		if client.ReasonOf(err) != "" {
			return err // the server's message already names the disk
		}
		return fmt.Errorf("uploading %s to %s: %w", o.imageLabel(), id, err)
	}

	if o.wait {
		fmt.Fprintf(o.streams.ErrOut, "waiting for %s to become Ready\n", id)
		if err := o.waitReady(ctx, c, disk); err != nil {
			return err
		}
	}
	fmt.Fprintf(o.streams.Out, "%s uploaded (%s in %s)\n", id, humanBytes(res.BytesReceived), roundDuration(o.now().Sub(start)))
	return nil
}

// imageLabel names the uploaded file in messages.
func (o *uploadOptions) imageLabel() string {
	if o.imagePath == "-" {
		return "standard input"
	}
	return o.imagePath
}

func sizeLabel(n int64) string {
	if n < 0 {
		return "size unknown"
	}
	return humanBytes(n)
}

// waitReady waits for the disk's Ready condition at its current
// generation, failing early when the disk fails or disappears. before is
// the disk as read before the upload: a failure it already showed (an
// earlier attempt) is stale until the controller reports again.
func (o *uploadOptions) waitReady(ctx context.Context, c *client.Client, before *v1alpha1.VMDisk) error {
	ns, name := before.ObjectMeta.Namespace, before.ObjectMeta.Name
	id := objectID(v1alpha1.KindVMDisk, name)
	stale := readyCondition(before)
	wctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	_, err := c.WaitFor(wctx, v1alpha1.KindVMDisk, ns, name, func(obj v1alpha1.Object, deleted bool) (bool, error) {
		if deleted {
			return false, fmt.Errorf("%s was deleted while it was being imported", id)
		}
		d, ok := obj.(*v1alpha1.VMDisk)
		if !ok {
			return false, nil
		}
		if cond := readyCondition(d); d.Status.Phase == v1alpha1.DiskPhaseFailed &&
			(before.Status.Phase != v1alpha1.DiskPhaseFailed || !sameCondition(cond, stale)) {
			msg := "no reason given"
			if cond != nil && cond.Message != "" {
				msg = cond.Message
			}
			return false, fmt.Errorf("%s failed after the upload: %s", id, msg)
		}
		return client.ConditionMet(d, v1alpha1.ConditionReady, v1alpha1.ConditionTrue), nil
	})
	if err != nil && errors.Is(wctx.Err(), context.DeadlineExceeded) && ctx.Err() == nil {
		return fmt.Errorf("the data of %s is stored, but the disk did not become Ready within %s (vmctl describe vmd %s)", id, o.timeout, name)
	}
	if errors.Is(err, errdefs.ErrNotFound) {
		return notFound(err, v1alpha1.KindVMDisk, name)
	}
	return err
}

// readyCondition returns a copy of the disk's Ready condition, or nil.
func readyCondition(d *v1alpha1.VMDisk) *v1alpha1.Condition {
	if c := v1alpha1.FindCondition(d.Status.Conditions, v1alpha1.ConditionReady); c != nil {
		cp := *c
		return &cp
	}
	return nil
}

// sameCondition reports whether two observations are the same report.
func sameCondition(a, b *v1alpha1.Condition) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Status == b.Status && a.Reason == b.Reason && a.Message == b.Message &&
		a.ObservedGeneration == b.ObservedGeneration && timeEqual(a.LastTransitionTime, b.LastTransitionTime)
}

func timeEqual(a, b *v1alpha1.Time) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Equal(b.Time)
}
