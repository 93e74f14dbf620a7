package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"
)

// defaultProgressInterval is how often plain (non-terminal) progress
// prints a line: often enough to show life in a CI log, rarely enough
// not to flood it.
const defaultProgressInterval = 5 * time.Second

// progress reports a byte transfer (upload or image pull) to the user.
// Write counts bytes passing through an io.TeeReader; set reports
// absolute figures from a remote source. Neither fails: progress must
// never break the transfer it describes.
type progress interface {
	io.Writer
	// set reports done of total bytes (total <= 0: unknown).
	set(done, total int64)
	// finish ends the display; ok says whether the transfer completed.
	finish(ok bool)
}

// progressOptions choose and shape a progress display.
type progressOptions struct {
	// label names what is transferred ("vmdisk/web-root").
	label string
	// total is the expected byte count; <= 0 when unknown.
	total int64
	// bar draws a redrawn terminal bar; otherwise plain lines are
	// printed every interval.
	bar      bool
	interval time.Duration
	now      func() time.Time
}

// newProgress returns a bar or a plain-line reporter writing to w.
func newProgress(w io.Writer, o progressOptions) progress {
	if o.now == nil {
		o.now = time.Now
	}
	if o.interval <= 0 {
		o.interval = defaultProgressInterval
	}
	if o.bar {
		return newBarProgress(w, o)
	}
	start := o.now()
	return &plainProgress{w: w, label: o.label, total: o.total, interval: o.interval, now: o.now, start: start, last: start}
}

// isTerminal reports whether w is a terminal that can redraw a bar.
// A plain character-device check keeps vmctl free of terminal libraries;
// TERM=dumb (editors' shells, some CI runners) gets plain lines.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok || os.Getenv("TERM") == "dumb" {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// barProgress is a progressbar/v3 bar showing bytes, rate and ETA.
type barProgress struct {
	w   io.Writer
	bar *progressbar.ProgressBar
	max int64
}

func newBarProgress(w io.Writer, o progressOptions) *barProgress {
	total := o.total
	if total <= 0 {
		total = -1 // progressbar's spinner mode
	}
	bar := progressbar.NewOptions64(total,
		progressbar.OptionSetWriter(w),
		progressbar.OptionSetDescription(o.label),
		progressbar.OptionShowBytes(true),
		progressbar.OptionUseIECUnits(true),
		progressbar.OptionShowCount(),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionSetElapsedTime(true),
		progressbar.OptionSetWidth(30),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionSetRenderBlankState(true),
		progressbar.OptionOnCompletion(func() { fmt.Fprintln(w) }),
	)
	return &barProgress{w: w, bar: bar, max: total}
}

func (b *barProgress) Write(p []byte) (int, error) {
	_ = b.bar.Add64(int64(len(p)))
	return len(p), nil
}

func (b *barProgress) set(done, total int64) {
	if total > 0 && total != b.max {
		b.max = total
		b.bar.ChangeMax64(total)
	}
	_ = b.bar.Set64(done)
}

func (b *barProgress) finish(ok bool) {
	if ok {
		_ = b.bar.Finish() // prints the newline through OnCompletion
		return
	}
	_ = b.bar.Exit()
	fmt.Fprintln(b.w)
}

// plainProgress prints one self-contained line per interval, for logs
// and pipes where a redrawn bar would be noise:
//
//	vmdisk/web-root: 512.0 MiB / 1.2 GiB (41.7%), 85.3 MiB/s, ETA 8s
type plainProgress struct {
	w           io.Writer
	label       string
	done, total int64
	interval    time.Duration
	now         func() time.Time
	start, last time.Time
}

func (p *plainProgress) Write(b []byte) (int, error) {
	p.set(p.done+int64(len(b)), p.total)
	return len(b), nil
}

func (p *plainProgress) set(done, total int64) {
	p.done = done
	if total > 0 {
		p.total = total
	}
	if t := p.now(); t.Sub(p.last) >= p.interval {
		p.last = t
		p.print(t)
	}
}

func (p *plainProgress) finish(ok bool) {
	if !ok {
		return // the error says what happened
	}
	p.print(p.now())
}

func (p *plainProgress) print(t time.Time) {
	var b strings.Builder
	b.WriteString(p.label + ": " + humanBytes(p.done))
	if p.total > 0 {
		fmt.Fprintf(&b, " / %s (%.1f%%)", humanBytes(p.total), float64(p.done)*100/float64(p.total))
	}
	if elapsed := t.Sub(p.start); elapsed > 0 && p.done > 0 {
		rate := float64(p.done) / elapsed.Seconds()
		fmt.Fprintf(&b, ", %s/s", humanBytes(int64(rate)))
		if p.total > p.done {
			eta := time.Duration(float64(p.total-p.done) / rate * float64(time.Second))
			fmt.Fprintf(&b, ", ETA %s", roundDuration(eta))
		}
	}
	fmt.Fprintln(p.w, b.String())
}

// humanBytes formats n with binary units: "512 B", "1.2 GiB".
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 5; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// roundDuration keeps one decimal of seconds below a minute and whole
// seconds above: "3.4s", "2m5s".
func roundDuration(d time.Duration) string {
	if d < time.Minute {
		return d.Round(100 * time.Millisecond).String()
	}
	return d.Round(time.Second).String()
}
