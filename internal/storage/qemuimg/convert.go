package qemuimg

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"regexp"
	"strconv"

	"github.com/vmdhq/vmd/internal/errdefs"
)

// ConvertRequest describes copying an image into a new file, possibly in
// another format.
type ConvertRequest struct {
	// Src is the image to read; SrcFormat is what it is asserted to be.
	// qemu-img reads Src as exactly that format: a qcow2 file declared raw
	// is copied as the raw bytes of the qcow2 container (header, tables
	// and all), never as the guest data it describes.
	Src       string
	SrcFormat Format
	// Dst is the file to create (it must not exist), in DstFormat.
	Dst       string
	DstFormat Format
	// Compress writes compressed qcow2 clusters (-c): smaller files, much
	// slower conversion. Only valid with a qcow2 destination.
	Compress bool
	// Progress, when set, receives qemu-img's completion percentage,
	// non-decreasing, ending at 100 on success. It is called from another
	// goroutine, never concurrently with itself, and always before Convert
	// returns. It must not block for long: qemu-img's output waits on it.
	Progress func(pct float64)
}

// convertCoroutines is qemu-img convert's -m: parallel in-flight requests.
// With -W it roughly doubles throughput on local disks (peers.md §3.3:
// qcow2→raw 1.2 → 2.1 GiB/s on a 2-core host).
const convertCoroutines = "8"

// Convert copies req.Src into a new file req.Dst:
//
//	qemu-img convert -p -f SRCFMT -O DSTFMT -W -m 8 [-c] SRC TMP
//
// then renames TMP to req.Dst. Zero regions stay sparse. -W lets the -m
// coroutines complete writes out of order, which is what makes them pay off;
// with a qcow2 destination the clusters may then sit out of guest order in
// the file, which costs nothing measurable on SSDs and page cache. -W is
// dropped when compressing, which needs sequential output. On any
// failure or cancellation the temporary file is removed and req.Dst is not
// created; an existing req.Dst is errdefs.ErrAlreadyExists.
func (r *Runner) Convert(ctx context.Context, req ConvertRequest) error {
	if err := r.convert(ctx, req); err != nil {
		return fmt.Errorf("converting %s to %s: %w", req.Src, req.Dst, err)
	}
	return nil
}

func (r *Runner) convert(ctx context.Context, req ConvertRequest) error {
	if err := req.SrcFormat.Validate(); err != nil {
		return fmt.Errorf("source: %w", err)
	}
	if err := req.DstFormat.Validate(); err != nil {
		return fmt.Errorf("destination: %w", err)
	}
	if req.Compress && req.DstFormat != FormatQCOW2 {
		return fmt.Errorf("compression needs a qcow2 destination, not %s: %w", req.DstFormat, errdefs.ErrInvalid)
	}
	src, err := absPath("source", req.Src)
	if err != nil {
		return err
	}
	dst, err := absPath("destination", req.Dst)
	if err != nil {
		return err
	}
	if src == dst {
		return fmt.Errorf("source and destination are the same file: %w", errdefs.ErrInvalid)
	}
	if _, err := statExisting(src); err != nil {
		return err
	}

	args := []string{"convert", "-p", "-f", string(req.SrcFormat), "-O", string(req.DstFormat), "-m", convertCoroutines}
	if req.Compress {
		args = append(args, "-c")
	} else {
		args = append(args, "-W")
	}
	pw := &progressWriter{fn: req.Progress, last: -1}
	if err := r.produce(ctx, dst, pw, func(tmp string) []string {
		return append(args, src, tmp)
	}); err != nil {
		return err
	}
	// The conversion is complete: say so even if qemu-img's last update
	// (it prints on 1 % steps) was lost to a short read.
	pw.report(100)
	return nil
}

// progressRe matches one qemu-img -p update, "    (12.34/100%)".
var progressRe = regexp.MustCompile(`\((\d{1,3}(?:\.\d+)?)/100%\)`)

// progressWriter parses qemu-img -p output as it arrives. Updates are
// separated by '\r' (and a final '\n'); an update split across two writes is
// kept until its terminator arrives. Values are clamped to [0,100] and only
// increases are reported.
type progressWriter struct {
	fn      func(float64)
	last    float64
	pending []byte
}

// maxPending bounds the unterminated tail kept between writes; qemu-img's
// updates are a few dozen bytes, anything longer is not progress.
const maxPending = 256

func (p *progressWriter) Write(b []byte) (int, error) {
	n := len(b)
	p.pending = append(p.pending, b...)
	for {
		i := bytes.IndexAny(p.pending, "\r\n")
		if i < 0 {
			break
		}
		p.parse(p.pending[:i])
		p.pending = p.pending[i+1:]
	}
	if len(p.pending) > maxPending {
		p.pending = p.pending[len(p.pending)-maxPending:]
	}
	// Compact so the backing array does not grow with the output.
	p.pending = append([]byte(nil), p.pending...)
	return n, nil
}

func (p *progressWriter) parse(line []byte) {
	m := progressRe.FindSubmatch(line)
	if m == nil {
		return
	}
	v, err := strconv.ParseFloat(string(m[1]), 64)
	if err != nil || math.IsNaN(v) {
		return
	}
	p.report(v)
}

func (p *progressWriter) report(v float64) {
	v = math.Max(0, math.Min(100, v))
	if v <= p.last {
		return
	}
	p.last = v
	if p.fn != nil {
		p.fn(v)
	}
}
