package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/vmdhq/vmd/api/v1alpha1"
	"github.com/vmdhq/vmd/internal/client"
	"github.com/vmdhq/vmd/internal/errdefs"
	"github.com/vmdhq/vmd/internal/images"
)

// execSSH runs the system ssh with argv (argv[0] is "ssh"). It replaces
// the vmctl process, so ssh owns the terminal and its exit code is the
// command's; tests replace it to inspect argv.
var execSSH = func(argv []string) error {
	path, err := exec.LookPath(argv[0])
	if err != nil {
		return fmt.Errorf("finding ssh: %w", err)
	}
	return syscall.Exec(path, argv, os.Environ())
}

// currentUser is the login used when the VM's image names none; tests
// replace it.
var currentUser = func() (string, error) {
	u, err := user.Current()
	if err != nil {
		return "", fmt.Errorf("looking up the current user: %w", err)
	}
	return u.Username, nil
}

// newSSHCmd builds `vmctl ssh NAME [-l USER] [-i KEY] [-- CMD...]`.
func newSSHCmd(root *rootOptions) *cobra.Command {
	var login, identity string
	cmd := &cobra.Command{
		Use:   "ssh NAME [-- COMMAND [ARG...]]",
		Short: "Open an SSH session to a VMInstance",
		Long: `Run the system ssh against the private address of a VMInstance
(status.addresses). The user defaults to the golden image's account
(debian, ubuntu, cloud-user, ...) when the system disk comes from a golden
image, else to your own user name. The keys are those of spec.sshKeys.`,
		Example: `  vmctl ssh web
  vmctl ssh web -l root -i ~/.ssh/id_ed25519 -- uname -a`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := root.client()
			if err != nil {
				return err
			}
			ns, _ := root.ns()
			argv, err := sshArgv(cmd.Context(), c, ns, args[0], login, identity, args[1:])
			if err != nil {
				return err
			}
			return execSSH(argv)
		},
	}
	cmd.Flags().StringVarP(&login, "login", "l", "", "user to log in as (default: the image's account, else yours)")
	cmd.Flags().StringVarP(&identity, "identity", "i", "", "private key file for ssh -i")
	return cmd
}

// sshArgv builds the ssh command line for the VM ns/name.
func sshArgv(ctx context.Context, c *client.Client, ns, name, login, identity string, command []string) ([]string, error) {
	vm, err := c.GetVMInstance(ctx, ns, name)
	if err != nil {
		return nil, notFound(err, v1alpha1.KindVMInstance, name)
	}
	addr := sshAddress(vm)
	if addr == "" {
		return nil, fmt.Errorf("vminstance %q has no address yet (phase %q): wait for it with \"vmctl wait vmi/%s --for=condition=Ready\"",
			name, vm.Status.Phase, name)
	}
	if login == "" {
		if login, err = defaultLogin(ctx, c, vm); err != nil {
			return nil, err
		}
	}
	argv := []string{"ssh", "-l", login}
	if identity != "" {
		argv = append(argv, "-i", identity)
	}
	argv = append(argv, addr)
	if len(command) > 0 {
		argv = append(argv, "--")
		argv = append(argv, command...)
	}
	return argv, nil
}

// sshAddress picks the VM's private address, the one the host reaches
// (an external one may be unroutable from the host itself); any address
// when no private one is listed.
func sshAddress(vm *v1alpha1.VMInstance) string {
	for _, a := range vm.Status.Addresses {
		if a.Type == "Private" && a.Address != "" {
			return a.Address
		}
	}
	for _, a := range vm.Status.Addresses {
		if a.Address != "" {
			return a.Address
		}
	}
	return ""
}

// defaultLogin is the golden image's account when the system disk (the
// first in boot order) was filled from one, else the current user.
func defaultLogin(ctx context.Context, c *client.Client, vm *v1alpha1.VMInstance) (string, error) {
	if len(vm.Spec.Disks) > 0 {
		disk, err := c.GetVMDisk(ctx, vm.ObjectMeta.Namespace, vm.Spec.Disks[0].Name)
		switch {
		case errors.Is(err, errdefs.ErrNotFound):
		case err != nil:
			return "", err
		case disk.Spec.Source.Image != nil:
			if g, ok := images.LookupGoldenImage(disk.Spec.Source.Image.Name); ok && g.DefaultUser != "" {
				return g.DefaultUser, nil
			}
		}
	}
	return currentUser()
}
