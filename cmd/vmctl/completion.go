package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/vmdhq/vmd/api/v1alpha1"
)

func newCompletionCmd(root *rootOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "completion bash|zsh|fish|powershell",
		Short: "Print a shell completion script",
		Long: `Print the completion script for a shell. Load it in the current shell
with, for bash:

  source <(vmctl completion bash)

or install it for every session:

  vmctl completion bash > /etc/bash_completion.d/vmctl
  vmctl completion zsh > "${fpath[1]}/_vmctl"
  vmctl completion fish > ~/.config/fish/completions/vmctl.fish`,
		Args:                  cobra.ExactArgs(1),
		ValidArgs:             []string{"bash", "zsh", "fish", "powershell"},
		DisableFlagsInUseLine: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			out := root.streams.Out
			top := cmd.Root()
			switch args[0] {
			case "bash":
				return top.GenBashCompletionV2(out, true)
			case "zsh":
				return top.GenZshCompletion(out)
			case "fish":
				return top.GenFishCompletion(out, true)
			case "powershell":
				return top.GenPowerShellCompletionWithDesc(out)
			}
			return fmt.Errorf("unsupported shell %q: use bash, zsh, fish or powershell", args[0])
		},
	}
}

// resourceTypes are offered when completing the TYPE argument.
var resourceTypes = []string{"vminstances", "vmdisks", "vmi", "vmd", "all"}

// completeResources completes TYPE, then object names of that TYPE (asking
// vmd, briefly: completion must never hang a shell).
func completeResources(root *rootOptions) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		if len(args) == 0 && !strings.Contains(toComplete, "/") {
			var out []cobra.Completion
			for _, t := range resourceTypes {
				if strings.HasPrefix(t, toComplete) {
					out = append(out, t)
				}
			}
			return out, cobra.ShellCompDirectiveNoFileComp
		}
		typ, prefix := "", ""
		if len(args) == 0 {
			typ, _, _ = strings.Cut(toComplete, "/")
			prefix = typ + "/"
		} else if !strings.Contains(args[0], "/") {
			typ = args[0]
		}
		kind, ok := v1alpha1.KindForResource(typ)
		if !ok {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		c, err := root.client()
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		ctx, cancel := context.WithTimeout(cmd.Context(), 2*time.Second)
		defer cancel()
		ns, _ := root.ns()
		list, err := c.List(ctx, kind, ns)
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		var out []cobra.Completion
		for _, obj := range list.Items {
			name := prefix + obj.GetObjectMeta().Name
			if strings.HasPrefix(name, toComplete) {
				out = append(out, name)
			}
		}
		return out, cobra.ShellCompDirectiveNoFileComp
	}
}
