package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/vmdhq/vmd/internal/client"
)

func newImageCmd(root *rootOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "image",
		Aliases: []string{"images"},
		Short:   "List and pre-download golden images",
		Long: `Golden images are the named OS images a VMDisk can start from
(spec.source.image.name). vmd downloads each one once into a local cache;
every disk made from it is a copy-on-write overlay on that base.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(newImageListCmd(root), newImagePullCmd(root))
	return cmd
}

type imageListOptions struct {
	*rootOptions
	all    bool
	output string
}

func newImageListCmd(root *rootOptions) *cobra.Command {
	o := &imageListOptions{rootOptions: root}
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List cached golden images (--all: the whole catalogue)",
		Long: `List the golden images in vmd's cache with their size on the host
and the disks built on them. With --all, list every image of the catalogue,
cached or not.`,
		Example: `  vmctl image list
  vmctl image list --all -o wide`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.run(cmd.Context())
		},
	}
	cmd.Flags().BoolVar(&o.all, "all", false, "list every catalogue image, cached or not")
	cmd.Flags().StringVarP(&o.output, "output", "o", "", "output format: wide, json or yaml")
	_ = cmd.RegisterFlagCompletionFunc("output", cobra.FixedCompletions([]string{outputWide, outputJSON, outputYAML}, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

// imageListDocument is the -o json|yaml form, the server's ImageList.
type imageListDocument struct {
	APIVersion string         `json:"apiVersion"`
	Kind       string         `json:"kind"`
	Items      []client.Image `json:"items"`
}

func (o *imageListOptions) run(ctx context.Context) error {
	switch o.output {
	case outputTable, outputWide, outputJSON, outputYAML:
	default:
		return fmt.Errorf("unable to match a printer suitable for the output format %q, allowed formats are: json,wide,yaml", o.output)
	}
	c, err := o.client()
	if err != nil {
		return err
	}
	var opts []client.ImageListOption
	if o.all {
		opts = append(opts, client.AllImages())
	}
	imgs, err := c.ListImages(ctx, opts...)
	if err != nil {
		return err
	}
	switch o.output {
	case outputJSON, outputYAML:
		return encode(o.streams.Out, o.output, imageListDocument{APIVersion: client.ImagesGroupVersion, Kind: "ImageList", Items: append([]client.Image{}, imgs...)})
	}
	if len(imgs) == 0 {
		msg := "No golden images are cached; vmctl image list --all shows the catalogue."
		if o.all {
			msg = "The daemon knows no golden images."
		}
		fmt.Fprintln(o.streams.ErrOut, msg)
		return nil
	}
	return printImages(o.streams.Out, imgs, o.output == outputWide)
}

// printImages writes the image table:
//
//	NAME OS KIND SIZE CACHED USERS [VIRTUAL FORMAT USED-BY URL]
func printImages(w io.Writer, imgs []client.Image, wide bool) error {
	tw := newTabWriter(w)
	h := []string{"NAME", "OS", "KIND", "SIZE", "CACHED", "USERS"}
	if wide {
		h = append(h, "VIRTUAL", "FORMAT", "USED-BY", "URL")
	}
	fmt.Fprintln(tw, strings.Join(h, "\t"))
	for _, img := range imgs {
		osName := strings.TrimSpace(img.OS + " " + img.Version)
		row := []string{img.Name, orNone(osName), orNone(img.Kind), bytesOrNone(img.ActualSize), cached(img), strconv.Itoa(len(img.Users))}
		if wide {
			row = append(row, bytesOrNone(img.VirtualSize), orNone(img.Format), orNone(strings.Join(img.Users, ",")), orNone(img.URL))
		}
		fmt.Fprintln(tw, strings.Join(row, "\t"))
	}
	return tw.Flush()
}

// cached is the CACHED cell: yes, partial (a download under way or
// interrupted) or no.
func cached(img client.Image) string {
	switch {
	case img.Ready:
		return "yes"
	case img.ActualSize > 0:
		return "partial"
	}
	return "no"
}

func bytesOrNone(n int64) string {
	if n <= 0 {
		return none
	}
	return humanBytes(n)
}

type imagePullOptions struct {
	*rootOptions
	noProgress bool
	interval   time.Duration
}

func newImagePullCmd(root *rootOptions) *cobra.Command {
	o := &imagePullOptions{rootOptions: root, interval: defaultProgressInterval}
	cmd := &cobra.Command{
		Use:   "pull NAME...",
		Short: "Download golden images into vmd's cache ahead of use",
		Long: `Download golden images into vmd's cache now, so that disks created from
them later are ready at once. An image already cached is not downloaded
again; an interrupted download resumes. Each image gets a progress bar on a
terminal, plain progress lines otherwise.`,
		Example: `  vmctl image pull ubuntu-2404 debian-12`,
		Args:    cobra.MinimumNArgs(1),
		ValidArgsFunction: func(cmd *cobra.Command, _ []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
			return completeImages(cmd.Context(), root, toComplete)
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.run(cmd.Context(), args)
		},
	}
	cmd.Flags().BoolVar(&o.noProgress, "no-progress", false, "print plain progress lines instead of a bar")
	return cmd
}

// run pulls each image in turn; a failure is reported and the others are
// still pulled, as apply and delete do.
func (o *imagePullOptions) run(ctx context.Context, names []string) error {
	c, err := o.client()
	if err != nil {
		return err
	}
	failed := false
	for _, name := range names {
		if err := o.pull(ctx, c, name); err != nil {
			printError(o.streams.ErrOut, err)
			failed = true
			if ctx.Err() != nil {
				break
			}
		}
	}
	if failed {
		return errReported
	}
	return nil
}

func (o *imagePullOptions) pull(ctx context.Context, c *client.Client, name string) error {
	id := "image/" + name
	bar := !o.noProgress && isTerminal(o.streams.ErrOut)
	var p progress // created on the first figures: a cached image has none
	start := o.now()
	img, err := c.PullImage(ctx, name, func(done, total int64) {
		if p == nil {
			if !bar {
				fmt.Fprintf(o.streams.ErrOut, "pulling %s\n", id)
			}
			p = newProgress(o.streams.ErrOut, progressOptions{label: id, total: total, bar: bar, interval: o.interval, now: o.now})
		}
		p.set(done, total)
	})
	if p != nil {
		p.finish(err == nil)
	}
	if err != nil {
		return err
	}
	if p == nil {
		fmt.Fprintf(o.streams.Out, "%s already cached (%s)\n", id, bytesOrNone(img.ActualSize))
		return nil
	}
	fmt.Fprintf(o.streams.Out, "%s pulled (%s in %s)\n", id, bytesOrNone(img.ActualSize), roundDuration(o.now().Sub(start)))
	return nil
}

// completeImages offers catalogue names (asking vmd briefly).
func completeImages(ctx context.Context, root *rootOptions, prefix string) ([]cobra.Completion, cobra.ShellCompDirective) {
	c, err := root.client()
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	imgs, err := c.ListImages(ctx, client.AllImages())
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	var out []cobra.Completion
	for _, img := range imgs {
		if strings.HasPrefix(img.Name, prefix) {
			out = append(out, img.Name)
		}
	}
	return out, cobra.ShellCompDirectiveNoFileComp
}
