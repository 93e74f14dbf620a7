package qemuimg

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/vmdhq/vmd/internal/errdefs"
)

// CheckError reports inconsistencies `qemu-img check` found. It matches
// errdefs.ErrInvalid. Leaks alone (exit status 3) only waste space; a caller
// that tolerates them can test Corruptions == 0 && CheckErrors == 0 via
// errors.As.
type CheckError struct {
	// Path is the image checked.
	Path string
	// Corruptions counts metadata errors that can lose or expose data.
	Corruptions int64
	// Leaks counts allocated but unreferenced clusters.
	Leaks int64
	// CheckErrors counts errors that stopped parts of the check (I/O).
	CheckErrors int64
	// Detail is the tail of qemu-img's report.
	Detail string
}

// Error summarises the counts and qemu-img's own report.
func (e *CheckError) Error() string {
	s := fmt.Sprintf("image %s is inconsistent: %d corruptions, %d leaked clusters, %d check errors",
		e.Path, e.Corruptions, e.Leaks, e.CheckErrors)
	if e.Detail != "" {
		s += ": " + e.Detail
	}
	return s
}

// Is makes errors.Is(err, errdefs.ErrInvalid) true.
func (e *CheckError) Is(target error) bool { return target == errdefs.ErrInvalid }

// Exit statuses of qemu-img check.
const (
	checkOK          = 0
	checkCorrupt     = 2
	checkLeaks       = 3
	checkUnsupported = 63
)

// Check verifies an image's metadata:
//
//	qemu-img check --output=json -f FORMAT PATH
//
// Exit status 0 is nil; 2 (corruptions) and 3 (leaks) are a *CheckError;
// formats without metadata to check (raw, exit status 63) are consistent by
// construction and return nil. Other failures (unreadable image, a running
// VM holding it: errdefs.ErrConflict) are returned as qemu-img reported them.
// No --force-share: checking an image someone is writing gives false alarms.
func (r *Runner) Check(ctx context.Context, path string, format Format) error {
	if err := r.check(ctx, path, format); err != nil {
		return fmt.Errorf("checking %s: %w", path, err)
	}
	return nil
}

func (r *Runner) check(ctx context.Context, path string, format Format) error {
	if err := format.Validate(); err != nil {
		return err
	}
	abs, err := absPath("image", path)
	if err != nil {
		return err
	}
	if _, err := statExisting(abs); err != nil {
		return err
	}
	out, err := r.run(ctx, nil, "check", "--output=json", "-f", string(format), abs)
	if err == nil {
		return nil
	}
	var ce *cmdError
	if !errors.As(err, &ce) {
		return err
	}
	switch ce.code {
	case checkUnsupported:
		r.log().Debug("format has nothing to check", "path", abs, "format", format)
		return nil
	case checkCorrupt, checkLeaks:
		var j struct {
			Corruptions int64 `json:"corruptions"`
			Leaks       int64 `json:"leaks"`
			CheckErrors int64 `json:"check-errors"`
		}
		if jerr := json.Unmarshal(out, &j); jerr != nil {
			return fmt.Errorf("decoding qemu-img check output: %w (after %w)", jerr, err)
		}
		return &CheckError{Path: abs, Corruptions: j.Corruptions, Leaks: j.Leaks, CheckErrors: j.CheckErrors, Detail: ce.stderr}
	default:
		return err
	}
}
