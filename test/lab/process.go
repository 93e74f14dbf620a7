package lab

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// stopGrace is how long a process gets between SIGTERM and SIGKILL.
const stopGrace = 10 * time.Second

// Process is a long-running program the lab started and will stop by PID.
type Process struct {
	// Name identifies the process in logs; its output goes to LogPath.
	Name    string
	LogPath string

	cmd  *exec.Cmd
	done chan struct{}
	err  error // exit status, valid once done is closed
}

// PID returns the process id.
func (p *Process) PID() int { return p.cmd.Process.Pid }

// Exited reports whether the process has ended.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Stop sends SIGTERM, waits up to grace, then SIGKILLs. Stopping an exited process is a no-op.
func (p *Process) Stop(grace time.Duration) error {
	if p.Exited() {
		return nil
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("stopping %s (pid %d): %w", p.Name, p.PID(), err)
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(grace):
	}
	if err := p.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("killing %s (pid %d): %w", p.Name, p.PID(), err)
	}
	select {
	case <-p.done:
		return fmt.Errorf("stopping %s (pid %d): ignored SIGTERM for %s, killed", p.Name, p.PID(), grace)
	case <-time.After(5 * time.Second):
		return fmt.Errorf("stopping %s (pid %d): still running after SIGKILL", p.Name, p.PID())
	}
}

// startProcess starts cmd as a lab daemon: own process group (a terminal's Ctrl-C reaches the
// test binary, whose handler tears down in order, not every daemon at once), output to
// Dir/logs/<name>.log, PID recorded in Dir/pids/<name>.pid for people and for vmlab.sh.
func (l *Lab) startProcess(name string, cmd *exec.Cmd) (*Process, error) {
	logPath := filepath.Join(l.Dir, "logs", name+".log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		_ = logFile.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &Process{Name: name, LogPath: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		_ = logFile.Close()
		close(p.done)
	}()
	pidFile := filepath.Join(l.Dir, "pids", name+".pid")
	if err := os.WriteFile(pidFile, []byte(strconv.Itoa(p.PID())+"\n"), 0o644); err != nil {
		_ = p.Stop(stopGrace)
		return nil, fmt.Errorf("recording pid of %s: %w", name, err)
	}
	l.mu.Lock()
	if name == anchorName {
		l.anchor = p
	} else {
		l.daemons = append(l.daemons, p)
	}
	l.mu.Unlock()
	return p, nil
}

// processAlive reports whether pid exists and is not a zombie.
func processAlive(pid int) bool {
	if pid <= 0 {
		return false
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	fields := strings.Fields(afterComm(string(stat)))
	return len(fields) > 0 && fields[0] != "Z" && fields[0] != "X"
}

// processStartTime returns the start time of pid in clock ticks since boot (field 22 of
// /proc/<pid>/stat); together with the pid it identifies a process even after pid reuse.
func processStartTime(pid int) (string, error) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", err
	}
	fields := strings.Fields(afterComm(string(stat)))
	// fields[0] is field 3 (state), so field 22 is fields[19].
	if len(fields) < 20 {
		return "", fmt.Errorf("short /proc/%d/stat", pid)
	}
	return fields[19], nil
}

// afterComm returns the part of a /proc/<pid>/stat line after "(comm)", which may hold spaces.
func afterComm(stat string) string {
	if i := strings.LastIndexByte(stat, ')'); i >= 0 {
		return stat[i+1:]
	}
	return stat
}

// processesMentioning returns the pids of processes whose command line contains any of the
// given strings (a lab's run directory or name): a qemu or helper escaping the namespace
// bookkeeping still names its files.
func processesMentioning(needles ...string) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	self := os.Getpid()
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || len(cmdline) == 0 {
			continue
		}
		for _, n := range needles {
			if bytes.Contains(cmdline, []byte(n)) && processAlive(pid) {
				pids = append(pids, pid)
				break
			}
		}
	}
	return pids
}

// killPIDs sends SIGTERM to every pid, waits up to grace for them to go, then SIGKILLs the rest
// and waits a little more. It returns an error naming any survivor.
func killPIDs(pids []int, grace time.Duration) error {
	if len(pids) == 0 {
		return nil
	}
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGTERM)
	}
	if waitGone(pids, grace) {
		return nil
	}
	for _, pid := range pids {
		if processAlive(pid) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	if waitGone(pids, 5*time.Second) {
		return nil
	}
	var alive []string
	for _, pid := range pids {
		if processAlive(pid) {
			alive = append(alive, strconv.Itoa(pid))
		}
	}
	return fmt.Errorf("processes survived SIGKILL: %s", strings.Join(alive, " "))
}

func waitGone(pids []int, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for {
		alive := false
		for _, pid := range pids {
			if processAlive(pid) {
				alive = true
				break
			}
		}
		if !alive {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// ownerFile in a run directory holds "<pid> <start time>" of the process that owns the lab;
// keepFile marks a lab kept for inspection (VMD_LAB_KEEP), which automatic sweeps leave alone.
const (
	ownerFile = "owner"
	keepFile  = "kept"
)

// createRunDir creates dir with its owner file already inside, by renaming a prepared
// directory into place, so a concurrent Sweep never sees a run directory without an owner.
func createRunDir(dir string) error {
	pid := os.Getpid()
	st, err := processStartTime(pid)
	if err != nil {
		return fmt.Errorf("reading own start time: %w", err)
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dir), "."+filepath.Base(dir)+"-")
	if err != nil {
		return fmt.Errorf("creating run directory: %w", err)
	}
	err = os.WriteFile(filepath.Join(tmp, ownerFile), fmt.Appendf(nil, "%d %s\n", pid, st), 0o644)
	if err == nil {
		err = os.Chmod(tmp, 0o755)
	}
	if err == nil {
		err = os.Rename(tmp, dir)
	}
	if err != nil {
		_ = os.RemoveAll(tmp)
		return fmt.Errorf("creating run directory: %w", err)
	}
	return nil
}

// ownerAlive reports whether the process recorded in dir's owner file still runs.
func ownerAlive(dir string) bool {
	data, err := os.ReadFile(filepath.Join(dir, ownerFile))
	if err != nil {
		return false
	}
	var pid int
	var start string
	if _, err := fmt.Sscan(string(data), &pid, &start); err != nil {
		return false
	}
	st, err := processStartTime(pid)
	return err == nil && st == start && processAlive(pid)
}

// tailFile returns the last n lines of a text file, without carriage returns, or a note why not.
func tailFile(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	lines := strings.Split(strings.TrimRight(strings.ReplaceAll(string(data), "\r", ""), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
