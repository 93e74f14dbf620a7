package main

import (
	"context"
	"errors"
	"io"

	"github.com/spf13/cobra"

	"github.com/vmdhq/vmd/api/v1alpha1"
	"github.com/vmdhq/vmd/internal/client"
)

// newLogsCmd builds `vmctl logs NAME [-f] [--tail N]`: the guest's serial
// console output, which vmd logs to a file from boot on, so it shows what
// happened before anyone attached (kernel, cloud-init, login prompt).
func newLogsCmd(root *rootOptions) *cobra.Command {
	var (
		follow bool
		tail   int
	)
	cmd := &cobra.Command{
		Use:   "logs NAME",
		Short: "Print the serial console output of a VMInstance",
		Long: `Print what the guest wrote to its serial console since it last booted
(vmd starts the log afresh at each boot). With -f, keep printing what it
writes next until interrupted.`,
		Example: `  vmctl logs web
  vmctl logs web -f --tail 20`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := root.client()
			if err != nil {
				return err
			}
			ns, _ := root.ns()
			opts := client.LogOptions{Follow: follow}
			if cmd.Flags().Changed("tail") {
				opts.Tail = &tail
			}
			r, err := c.Logs(cmd.Context(), ns, args[0], opts)
			if err != nil {
				return notFound(err, v1alpha1.KindVMInstance, args[0])
			}
			defer r.Close()
			_, err = io.Copy(root.streams.Out, r)
			if follow && errors.Is(cmd.Context().Err(), context.Canceled) {
				return nil // Ctrl-C ends a follow
			}
			return err
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing what the guest writes")
	cmd.Flags().IntVar(&tail, "tail", -1, "lines of the end of the log to show (-1: all)")
	return cmd
}
