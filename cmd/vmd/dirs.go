package main

import (
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/vmdhq/vmd/internal/config"
	"github.com/vmdhq/vmd/internal/fsmode"
)

// stateDirMode is the mode of the state directory and of every directory
// of vmd's on the way to a file qemu opens (volumes, golden bases, the
// instance directories with the seed ISO and the NVRAM).
//
// libvirt runs qemu as an unprivileged user (Debian: libvirt-qemu, from
// qemu.conf user/group) and, with dynamic_ownership = 1 (the default),
// chowns each disk, ISO and NVRAM file to that user when the domain
// starts. qemu can only open them if it can search (x) every directory
// above them; it never needs to list (r) one. So these directories are
// 0711: searchable by all, listable and writable by vmd only. Files keep
// their own modes (state.db, volumes and seeds 0600, bases 0444).
const stateDirMode fs.FileMode = 0o711

// prepareStateDirs creates the state directory and the directories qemu
// must reach through it with stateDirMode, umask or not, and gives that
// mode to any of them an older vmd made 0700. Directories that are not
// vmd's (the ancestors of the state directory, or of a pool configured
// elsewhere) are never changed; when one of them would stop qemu, a
// warning names it. It is idempotent and cheap: run it at every start.
func prepareStateDirs(cfg *config.Config, log *slog.Logger) error {
	state := filepath.Clean(cfg.StateDir)
	if err := mkdirMode(state, stateDirMode, log); err != nil {
		return fmt.Errorf("creating state dir: %w", err)
	}
	qemuDirs := []string{cfg.InstancesDir(), cfg.ImageCacheDir()}
	for _, name := range slices.Sorted(maps.Keys(cfg.StorageClasses)) {
		qemuDirs = append(qemuDirs, cfg.PoolPath(name))
	}
	for _, dir := range qemuDirs {
		dir = filepath.Clean(dir)
		own := []string{dir}
		if rel, err := filepath.Rel(state, dir); err == nil && rel != "." && !strings.HasPrefix(rel, "..") {
			// Every directory between the state dir and dir is vmd's
			// ("pools" above "pools/local").
			own = own[:0]
			cur := state
			for _, part := range strings.Split(rel, string(filepath.Separator)) {
				cur = filepath.Join(cur, part)
				own = append(own, cur)
			}
		}
		for _, d := range own {
			if err := mkdirMode(d, stateDirMode, log); err != nil {
				return fmt.Errorf("creating %s: %w", d, err)
			}
		}
	}
	warned := map[string]bool{}
	for _, dir := range append([]string{state}, qemuDirs...) {
		if blocker := untraversableAncestor(dir); blocker != "" && !warned[blocker] {
			warned[blocker] = true
			log.Warn("qemu, running as an unprivileged user, cannot reach "+dir+": "+blocker+" is not searchable by others; "+
				"give it o+x (chmod o+x "+blocker+") or move vmd's directories", "dir", dir, "blocking", blocker)
		}
	}
	return nil
}

// mkdirMode makes dir a directory with exactly mode (fsmode.MkdirAll) and
// logs a change of an existing one's mode.
func mkdirMode(dir string, mode fs.FileMode, log *slog.Logger) error {
	old, changed, err := fsmode.MkdirAll(dir, mode)
	if changed {
		log.Info("setting the mode of a state directory so qemu can traverse it", "dir", dir,
			"from", fmt.Sprintf("%#o", old), "to", fmt.Sprintf("%#o", mode))
	}
	return err
}

// untraversableAncestor returns the first ancestor of dir (nearest the
// root) that others cannot search, or "" when qemu's user can reach dir.
// It cannot know qemu's group, so a directory searchable by its group
// only is reported too: the warning says what to check.
func untraversableAncestor(dir string) string {
	var chain []string
	for d := filepath.Dir(dir); ; d = filepath.Dir(d) {
		chain = append(chain, d)
		if filepath.Dir(d) == d {
			break
		}
	}
	for _, d := range slices.Backward(chain) {
		st, err := os.Stat(d)
		if err != nil {
			return ""
		}
		if st.Mode().Perm()&0o001 == 0 {
			return d
		}
	}
	return ""
}
