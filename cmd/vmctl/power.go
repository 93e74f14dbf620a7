package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/vmdhq/vmd/internal/client"
)

// newPowerCmd builds `vmctl start|stop|restart NAME`, the counterparts of
// `virtctl start|stop|restart`.
func newPowerCmd(root *rootOptions, action client.PowerAction, short, long string) *cobra.Command {
	return &cobra.Command{
		Use:   string(action) + " NAME",
		Short: short,
		Long:  long,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := root.client()
			if err != nil {
				return err
			}
			ns, _ := root.ns()
			if _, err := c.Power(cmd.Context(), ns, args[0], action); err != nil {
				return err
			}
			_, err = fmt.Fprintf(root.streams.Out, "vminstance/%s %s requested\n", args[0], action)
			return err
		},
	}
}

func newStartCmd(root *rootOptions) *cobra.Command {
	return newPowerCmd(root, client.PowerStart, "Start a VMInstance whose runStrategy is Manual",
		`Ask vmd to boot a VMInstance with runStrategy Manual. The request is
recorded and acted on once; a guest that later stops stays stopped.
Use "vmctl wait vmi/NAME --for=condition=Ready" to wait for it.`)
}

func newStopCmd(root *rootOptions) *cobra.Command {
	return newPowerCmd(root, client.PowerStop, "Stop a VMInstance whose runStrategy is Manual",
		`Ask vmd to shut down a VMInstance with runStrategy Manual: ACPI power
button, then power off after the configured timeout. For other run
strategies set spec.runStrategy: Halted instead.`)
}

func newRestartCmd(root *rootOptions) *cobra.Command {
	return newPowerCmd(root, client.PowerRestart, "Reboot a VMInstance",
		`Ask vmd to reboot a VMInstance (shutdown, then start): also how a running
guest picks up a spec change that set the RestartRequired condition.`)
}
