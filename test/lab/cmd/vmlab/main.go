// Command vmlab is the command-line face of the vmd test lab (package test/lab), for people:
// build the images, bring a lab up to poke at by hand, list labs, and remove leftovers of killed
// test runs. test/lab/vmlab.sh runs it; see test/e2e/README.md.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"

	"github.com/vmdhq/vmd/test/images"
	"github.com/vmdhq/vmd/test/lab"
)

const usage = `usage: vmlab <command> [flags]

commands:
  images            build the lab images, or reuse the cached ones ($VMD_LAB_CACHE, default %s)
  up [--no-debian12] start a lab and keep it until Ctrl-C (then tear it down)
  list              list labs on this host: live, kept, or left over
  cleanup [--kept] [NAME...]
                    remove labs whose test process is gone (--kept: also labs kept with
                    VMD_LAB_KEEP=1); labs of running tests are never touched
`

func main() { os.Exit(run()) }

func run() int {
	if len(os.Args) < 2 {
		fmt.Fprintf(os.Stderr, usage, images.DefaultCacheDir)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	var err error
	switch cmd, args := os.Args[1], os.Args[2:]; cmd {
	case "images":
		err = buildImages(ctx)
	case "up":
		err = up(ctx, args)
	case "list":
		err = list()
	case "cleanup":
		err = cleanup(ctx, args)
	case "help", "-h", "--help":
		fmt.Printf(usage, images.DefaultCacheDir)
	default:
		fmt.Fprintf(os.Stderr, "vmlab: unknown command %q\n"+usage, cmd, images.DefaultCacheDir)
		return 2
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "vmlab: %v\n", err)
		return 1
	}
	return 0
}

func logf(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) }

func buildImages(ctx context.Context) error {
	cache := images.NewCache(images.CacheDir(), logf)
	for _, name := range images.All {
		img, err := cache.Ensure(ctx, name)
		if err != nil {
			return err
		}
		verb := "reused"
		if img.Built {
			verb = "built"
		}
		fmt.Printf("%-9s %-6s %6.1fs  %s\n", name, verb, img.Duration.Seconds(), img.Dir)
	}
	return nil
}

func up(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("up", flag.ContinueOnError)
	noDebian := fs.Bool("no-debian12", false, "do not build or serve the debian12 image")
	if err := fs.Parse(args); err != nil {
		return err
	}
	opts := lab.Options{Logf: logf}
	if *noDebian {
		opts.Images = []images.Name{images.Tiny}
	}
	l, err := lab.Start(ctx, opts)
	if err != nil {
		return err
	}
	defer func() {
		if err := l.Close(); err != nil {
			logf("vmlab: closing %s: %v", l.Name, err)
		}
	}()
	domainType, err := l.DomainType(ctx)
	if err != nil {
		return err
	}
	var served []string
	for _, f := range []string{"debian12.qcow2", "tiny-vmlinuz", "tiny-initrd.img"} {
		if _, err := os.Stat(l.Dir + "/www/" + f); err == nil {
			served = append(served, l.HTTPBase+f)
		}
	}
	fmt.Printf(`lab %s is up; Ctrl-C tears it down.
  libvirt      virsh -c '%s' list --all
  domain type  %s
  lab shell    nsenter --target %d --mount --net bash   (netns %s, libvirt's private mounts)
  client shell ip netns exec %s bash                    (%s, routes %s via %s)
  bridge       %s %s/%d
  images       %s   (inside the lab namespace)
  ssh key      %s
  run dir      %s
`, l.Name, l.URI, domainType, l.NamespacePID(), l.Name, l.ClientNS, lab.ClientAddr, lab.Network,
		lab.UplinkAddr, l.Bridge, lab.Gateway, lab.Network.Bits(), strings.Join(served, " "), l.SSHKeyPath, l.Dir)
	<-ctx.Done()
	logf("vmlab: tearing down %s", l.Name)
	return nil
}

func list() error {
	labs, err := lab.List()
	if err != nil {
		return err
	}
	if len(labs) == 0 {
		fmt.Println("no labs")
		return nil
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "NAME\tSTATE\tNAMESPACES\tRUN DIR")
	for _, lo := range labs {
		state := "leftover"
		switch {
		case lo.OwnerAlive:
			state = "live"
		case lo.Kept:
			state = "kept"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", lo.Name, state, strings.Join(lo.Namespaces, ","), lo.Dir)
	}
	return w.Flush()
}

func cleanup(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("cleanup", flag.ContinueOnError)
	kept := fs.Bool("kept", false, "also remove labs kept with VMD_LAB_KEEP=1")
	if err := fs.Parse(args); err != nil {
		return err
	}
	return lab.Sweep(ctx, lab.SweepOptions{Kept: *kept, Names: fs.Args()}, logf)
}
