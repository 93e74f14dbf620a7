package main

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestHumanBytes(t *testing.T) {
	cases := []struct {
		name string
		n    int64
		want string
	}{
		{name: "zero", n: 0, want: "0 B"},
		{name: "below a KiB", n: 1023, want: "1023 B"},
		{name: "one KiB", n: 1024, want: "1.0 KiB"},
		{name: "fraction of GiB", n: 1288490189, want: "1.2 GiB"},
		{name: "TiB", n: 3 << 40, want: "3.0 TiB"},
		{name: "largest", n: 1<<63 - 1, want: "8.0 EiB"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := humanBytes(tc.n); got != tc.want {
				t.Errorf("humanBytes(%d) = %q, want %q", tc.n, got, tc.want)
			}
		})
	}
}

func TestRoundDuration(t *testing.T) {
	cases := []struct {
		name string
		d    time.Duration
		want string
	}{
		{name: "zero", d: 0, want: "0s"},
		{name: "tenths below a minute", d: 3449 * time.Millisecond, want: "3.4s"},
		{name: "whole seconds above", d: 125400 * time.Millisecond, want: "2m5s"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := roundDuration(tc.d); got != tc.want {
				t.Errorf("roundDuration(%v) = %q, want %q", tc.d, got, tc.want)
			}
		})
	}
}

// fakeClock advances by step on every reading.
type fakeClock struct {
	t    time.Time
	step time.Duration
}

func (c *fakeClock) now() time.Time {
	c.t = c.t.Add(c.step)
	return c.t
}

func TestPlainProgress(t *testing.T) {
	cases := []struct {
		name   string
		total  int64
		writes []int // bytes per Write, one clock tick (2s) each
		ok     bool
		want   string
	}{
		{
			name:   "a line per interval and a final one",
			total:  100 << 20,
			writes: []int{10 << 20, 10 << 20, 30 << 20, 50 << 20},
			ok:     true,
			// Ticks: start 2s; writes at 4s (2s elapsed: quiet), 6s
			// (4s >= interval 3s: line), 8s (quiet), 10s (line); finish 12s.
			want: "vmdisk/d: 20.0 MiB / 100.0 MiB (20.0%), 5.0 MiB/s, ETA 16s\n" +
				"vmdisk/d: 100.0 MiB / 100.0 MiB (100.0%), 12.5 MiB/s\n" +
				"vmdisk/d: 100.0 MiB / 100.0 MiB (100.0%), 10.0 MiB/s\n",
		},
		{
			name:   "unknown size",
			total:  -1,
			writes: []int{1 << 20, 1 << 20, 1 << 20},
			ok:     true,
			want:   "vmdisk/d: 2.0 MiB, 512.0 KiB/s\nvmdisk/d: 3.0 MiB, 384.0 KiB/s\n",
		},
		{
			name:   "failure prints no final line",
			total:  10 << 20,
			writes: []int{1 << 20},
			ok:     false,
			want:   "",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			clk := &fakeClock{t: testNow, step: 2 * time.Second}
			p := newProgress(&buf, progressOptions{label: "vmdisk/d", total: tc.total, interval: 3 * time.Second, now: clk.now})
			for _, n := range tc.writes {
				if w, err := p.Write(make([]byte, n)); w != n || err != nil {
					t.Fatalf("Write = %d, %v", w, err)
				}
			}
			p.finish(tc.ok)
			if buf.String() != tc.want {
				t.Errorf("output:\n%s\nwant:\n%s", buf.String(), tc.want)
			}
		})
	}
}

func TestBarProgress(t *testing.T) {
	var buf bytes.Buffer
	p := newProgress(&buf, progressOptions{label: "image/debian-12", total: 0, bar: true})
	p.set(1<<20, 0)     // size not known yet: a spinner
	p.set(2<<20, 4<<20) // now it is
	p.set(4<<20, 4<<20)
	p.finish(true)
	out := buf.String()
	t.Logf("bar output: %q", out)
	for _, want := range []string{"image/debian-12", "100%", "4.0 MiB", "\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("bar output lacks %q:\n%q", want, out)
		}
	}
}
