package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"sync"
	"syscall"
)

// live holds the labs of this process that are not closed yet, for the signal handler.
var live struct {
	sync.Mutex
	labs    map[*Lab]struct{}
	signals chan os.Signal
}

// register adds l to the live labs. The first live lab installs a SIGINT/SIGTERM handler that
// tears every live lab down and then exits; the last one to go removes it again, restoring the
// default behaviour for the rest of the process.
func register(l *Lab) {
	live.Lock()
	defer live.Unlock()
	if live.labs == nil {
		live.labs = map[*Lab]struct{}{}
	}
	if len(live.labs) == 0 {
		ch := make(chan os.Signal, 1)
		signal.Notify(ch, syscall.SIGINT, syscall.SIGTERM)
		live.signals = ch
		go handleSignals(ch)
	}
	live.labs[l] = struct{}{}
}

func unregister(l *Lab) {
	live.Lock()
	defer live.Unlock()
	if _, ok := live.labs[l]; !ok {
		return
	}
	delete(live.labs, l)
	if len(live.labs) == 0 && live.signals != nil {
		signal.Stop(live.signals)
		close(live.signals)
		live.signals = nil
	}
}

func handleSignals(ch chan os.Signal) {
	sig, ok := <-ch
	if !ok {
		return
	}
	live.Lock()
	labs := make([]*Lab, 0, len(live.labs))
	for l := range live.labs {
		labs = append(labs, l)
	}
	live.Unlock()
	fmt.Fprintf(os.Stderr, "vmd lab: %v: tearing down %d lab(s)\n", sig, len(labs))
	for _, l := range labs {
		if err := l.Close(); err != nil {
			fmt.Fprintf(os.Stderr, "vmd lab: closing %s: %v\n", l.Name, err)
		}
	}
	code := 1
	if s, ok := sig.(syscall.Signal); ok {
		code = 128 + int(s) // what a shell reports for a process killed by the signal
	}
	os.Exit(code)
}

// labName matches the name of a lab namespace or run directory; the client namespace adds
// "-client".
var labName = regexp.MustCompile(`^` + Prefix + `[0-9a-f]{8}$`)

// Leftover describes a lab found on the host by List.
type Leftover struct {
	// Name is the lab name ("vmdlab-<8 hex>").
	Name string
	// Dir is its run directory, if it still exists.
	Dir string
	// Namespaces lists its network namespaces that still exist.
	Namespaces []string
	// OwnerAlive is true while the process that started the lab runs: then it is not a leftover
	// but a lab in use, by this or another test process.
	OwnerAlive bool
	// Kept is true for labs left running on purpose (VMD_LAB_KEEP=1).
	Kept bool
}

// List finds every lab on this host, live or leftover, by its namespaces in /run/netns and its
// run directory in the temporary directory.
func List() ([]Leftover, error) {
	found := map[string]*Leftover{}
	get := func(name string) *Leftover {
		if found[name] == nil {
			found[name] = &Leftover{Name: name}
		}
		return found[name]
	}
	entries, err := os.ReadDir(netnsDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("listing network namespaces: %w", err)
	}
	for _, e := range entries {
		name := e.Name()
		base := name
		if len(name) > len("-client") && name[len(name)-len("-client"):] == "-client" {
			base = name[:len(name)-len("-client")]
		}
		if labName.MatchString(base) {
			lo := get(base)
			lo.Namespaces = append(lo.Namespaces, name)
		}
	}
	dirs, err := filepath.Glob(filepath.Join(os.TempDir(), Prefix+"*"))
	if err != nil {
		return nil, fmt.Errorf("listing run directories: %w", err)
	}
	for _, d := range dirs {
		if labName.MatchString(filepath.Base(d)) {
			get(filepath.Base(d)).Dir = d
		}
	}
	out := make([]Leftover, 0, len(found))
	for _, lo := range found {
		if lo.Dir != "" {
			lo.OwnerAlive = ownerAlive(lo.Dir)
			_, err := os.Stat(filepath.Join(lo.Dir, keepFile))
			lo.Kept = err == nil
		}
		sort.Strings(lo.Namespaces)
		out = append(out, *lo)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// SweepOptions selects what Sweep removes.
type SweepOptions struct {
	// Kept also removes labs kept for inspection with VMD_LAB_KEEP=1.
	Kept bool
	// Names, if not empty, restricts the sweep to these labs.
	Names []string
}

// Sweep removes labs whose owner process is gone and that were not kept on purpose: every
// process in their namespaces (by PID), the namespaces, the run directory. Labs with a live owner
// are never touched: they belong to a running test. Each removal is logged.
func Sweep(ctx context.Context, opts SweepOptions, logf func(format string, args ...any)) error {
	labs, err := List()
	if err != nil {
		return err
	}
	var errs []error
	for _, lo := range labs {
		if lo.OwnerAlive || (lo.Kept && !opts.Kept) ||
			(len(opts.Names) > 0 && !slices.Contains(opts.Names, lo.Name)) {
			continue
		}
		if err := remove(ctx, lo); err != nil {
			errs = append(errs, fmt.Errorf("removing lab %s: %w", lo.Name, err))
			continue
		}
		logf("lab: removed leftover lab %s (namespaces %v, run directory %q)", lo.Name, lo.Namespaces, lo.Dir)
	}
	return errors.Join(errs...)
}

func remove(ctx context.Context, lo Leftover) error {
	var errs []error
	for _, ns := range lo.Namespaces {
		_, err := killNetNSProcesses(ctx, ns, 0)
		errs = append(errs, err)
	}
	// Processes that left the namespaces but still use the lab's files (none are expected).
	errs = append(errs, killPIDs(processesMentioning(filepath.Join(os.TempDir(), lo.Name)+"/"), stopGrace))
	for _, ns := range lo.Namespaces {
		errs = append(errs, deleteNetNS(ctx, ns))
	}
	if lo.Dir != "" {
		errs = append(errs, os.RemoveAll(lo.Dir))
	}
	return errors.Join(errs...)
}
