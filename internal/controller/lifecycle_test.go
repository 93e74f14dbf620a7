package controller

import (
	"testing"
	"time"

	"github.com/vmdhq/vmd/api/v1alpha1"
	"github.com/vmdhq/vmd/internal/hypervisor"
)

var (
	t0        = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	running   = hypervisor.DomainState{Exists: true, Running: true, State: "running", Reason: "booted"}
	absent    = hypervisor.DomainState{}
	neverRan  = hypervisor.DomainState{Exists: true, State: "shutoff", Reason: "unknown"}
	crashed   = hypervisor.DomainState{Exists: true, State: "shutoff", Reason: "failed"}
	poweroff  = hypervisor.DomainState{Exists: true, State: "shutoff", Reason: "shutdown"}
	destroyed = hypervisor.DomainState{Exists: true, State: "shutoff", Reason: "destroyed"}
)

func TestDecide(t *testing.T) {
	started := history{Started: true}
	tests := []struct {
		name     string
		strategy v1alpha1.RunStrategy
		obs      hypervisor.DomainState
		hist     history
		req      request
		want     action
		restart  bool
	}{
		{name: "always starts a new domain", strategy: v1alpha1.RunStrategyAlways, obs: absent, want: actStart},
		{name: "always leaves a running domain", strategy: v1alpha1.RunStrategyAlways, obs: running, hist: started, want: actNone},
		{name: "always restarts after a crash", strategy: v1alpha1.RunStrategyAlways, obs: crashed, hist: started, want: actStart, restart: true},
		{name: "always restarts after a guest shutdown", strategy: v1alpha1.RunStrategyAlways, obs: poweroff, hist: started, want: actStart, restart: true},
		{name: "always restarts after a host reboot", strategy: v1alpha1.RunStrategyAlways, obs: neverRan, hist: started, want: actStart, restart: true},
		{name: "always holds restarts in back-off", strategy: v1alpha1.RunStrategyAlways, obs: crashed,
			hist: history{Started: true, BackoffUntil: t0.Add(time.Second), Backoff: 10 * time.Second}, want: actBackoff},
		{name: "back-off over restarts", strategy: v1alpha1.RunStrategyAlways, obs: crashed,
			hist: history{Started: true, BackoffUntil: t0.Add(-time.Second), Backoff: 10 * time.Second}, want: actStart, restart: true},
		{name: "always restart request reboots", strategy: v1alpha1.RunStrategyAlways, obs: running, hist: started,
			req: request{RestartAt: "t1"}, want: actRestart},
		{name: "honoured restart request is not repeated", strategy: v1alpha1.RunStrategyAlways, obs: running,
			hist: history{Started: true, HonouredRestartAt: "t1"}, req: request{RestartAt: "t1"}, want: actNone},
		{name: "always ignores a stop request", strategy: v1alpha1.RunStrategyAlways, obs: running, hist: started,
			req: request{State: v1alpha1.RequestedStopped, StateAt: "t1"}, want: actNone},

		{name: "rerun starts a new domain", strategy: v1alpha1.RunStrategyRerunOnFailure, obs: absent, want: actStart},
		{name: "rerun restarts after a failure", strategy: v1alpha1.RunStrategyRerunOnFailure, obs: crashed, hist: started, want: actStart, restart: true},
		{name: "rerun restarts after a host reboot", strategy: v1alpha1.RunStrategyRerunOnFailure, obs: neverRan, hist: started, want: actStart, restart: true},
		{name: "rerun leaves a guest that powered off", strategy: v1alpha1.RunStrategyRerunOnFailure, obs: poweroff, hist: started, want: actNone},
		{name: "rerun leaves a destroyed domain", strategy: v1alpha1.RunStrategyRerunOnFailure, obs: destroyed, hist: started, want: actNone},
		{name: "rerun uses the remembered exit", strategy: v1alpha1.RunStrategyRerunOnFailure, obs: neverRan,
			hist: history{Started: true, LastExit: hypervisor.ExitShutdown}, want: actNone},

		{name: "once starts once", strategy: v1alpha1.RunStrategyOnce, obs: absent, want: actStart},
		{name: "once never restarts after a crash", strategy: v1alpha1.RunStrategyOnce, obs: crashed, hist: started, want: actNone},
		{name: "once never restarts after shutdown", strategy: v1alpha1.RunStrategyOnce, obs: poweroff, hist: started, want: actNone},

		{name: "manual does not start on its own", strategy: v1alpha1.RunStrategyManual, obs: absent, want: actNone},
		{name: "manual start request", strategy: v1alpha1.RunStrategyManual, obs: neverRan,
			req: request{State: v1alpha1.RequestedRunning, StateAt: "t1"}, want: actStart},
		{name: "manual does not restart after a crash", strategy: v1alpha1.RunStrategyManual, obs: crashed,
			hist: history{Started: true, HonouredStateAt: "t1"}, req: request{State: v1alpha1.RequestedRunning, StateAt: "t1"}, want: actNone},
		{name: "manual stop request", strategy: v1alpha1.RunStrategyManual, obs: running, hist: started,
			req: request{State: v1alpha1.RequestedStopped, StateAt: "t2"}, want: actStop},
		{name: "manual honoured stop not repeated", strategy: v1alpha1.RunStrategyManual, obs: running,
			hist: history{Started: true, HonouredStateAt: "t2"}, req: request{State: v1alpha1.RequestedStopped, StateAt: "t2"}, want: actNone},
		{name: "manual restart request starts a stopped VM", strategy: v1alpha1.RunStrategyManual, obs: poweroff,
			hist: started, req: request{RestartAt: "t3"}, want: actStart},
		{name: "manual keeps a running VM", strategy: v1alpha1.RunStrategyManual, obs: running, hist: started, want: actNone},

		{name: "halted stops a running domain", strategy: v1alpha1.RunStrategyHalted, obs: running, hist: started, want: actStop},
		{name: "halted leaves a stopped domain", strategy: v1alpha1.RunStrategyHalted, obs: poweroff, hist: started, want: actNone},
		{name: "halted ignores restart requests", strategy: v1alpha1.RunStrategyHalted, obs: absent, req: request{RestartAt: "t1"}, want: actNone},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := tc.hist
			h.Strategy = tc.strategy
			d := decide(tc.strategy, tc.obs, h, tc.req, t0)
			if d.Action != tc.want || d.Restart != tc.restart {
				t.Fatalf("decide = %+v, want %s restart=%v", d, tc.want, tc.restart)
			}
			if d.Reason == "" {
				t.Fatal("decision without a reason")
			}
		})
	}
}

func TestCrashLoopBackoff(t *testing.T) {
	tests := []struct {
		name        string
		gaps        []time.Duration // time between consecutive restarts
		wantBackoff time.Duration
	}{
		{name: "two quick restarts do not back off", gaps: []time.Duration{0, time.Second}, wantBackoff: 0},
		{name: "three within the window back off 10s", gaps: []time.Duration{0, time.Second, time.Second}, wantBackoff: 10 * time.Second},
		{name: "each further crash doubles", gaps: []time.Duration{0, time.Second, time.Second, 11 * time.Second, 21 * time.Second}, wantBackoff: 40 * time.Second},
		{name: "spread-out restarts never back off", gaps: []time.Duration{0, 61 * time.Second, 61 * time.Second, 61 * time.Second}, wantBackoff: 0},
		{name: "back-off is capped", gaps: []time.Duration{0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}, wantBackoff: backoffMax},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var h history
			now := t0
			for _, g := range tc.gaps {
				now = now.Add(g)
				h.recordStart(decision{Action: actStart, Restart: true}, now)
			}
			if h.Backoff != tc.wantBackoff {
				t.Fatalf("backoff = %s, want %s", h.Backoff, tc.wantBackoff)
			}
			if tc.wantBackoff > 0 && !h.BackoffUntil.Equal(now.Add(tc.wantBackoff)) {
				t.Fatalf("backoffUntil = %s", h.BackoffUntil)
			}
		})
	}
}

func TestSettle(t *testing.T) {
	tests := []struct {
		name        string
		strategy    v1alpha1.RunStrategy
		hist        history
		obs         hypervisor.DomainState
		now         time.Time
		wantStarted bool
		wantBackoff time.Duration
		wantExit    hypervisor.ExitKind
	}{
		{name: "strategy change starts afresh", strategy: v1alpha1.RunStrategyOnce,
			hist: history{Strategy: v1alpha1.RunStrategyHalted, Started: true, Backoff: time.Minute}, obs: poweroff, now: t0, wantExit: hypervisor.ExitShutdown},
		{name: "running counts as started (adoption)", strategy: v1alpha1.RunStrategyOnce,
			hist: history{Strategy: v1alpha1.RunStrategyOnce}, obs: running, now: t0, wantStarted: true},
		{name: "stable run clears back-off", strategy: v1alpha1.RunStrategyAlways,
			hist: history{Strategy: v1alpha1.RunStrategyAlways, Started: true, LastStart: t0, Backoff: time.Minute},
			obs:  running, now: t0.Add(stableAfter), wantStarted: true},
		{name: "short run keeps back-off", strategy: v1alpha1.RunStrategyAlways,
			hist: history{Strategy: v1alpha1.RunStrategyAlways, Started: true, LastStart: t0, Backoff: time.Minute},
			obs:  running, now: t0.Add(time.Second), wantStarted: true, wantBackoff: time.Minute},
		{name: "records a failure", strategy: v1alpha1.RunStrategyAlways,
			hist: history{Strategy: v1alpha1.RunStrategyAlways, Started: true}, obs: crashed, now: t0, wantStarted: true, wantExit: hypervisor.ExitFailure},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := tc.hist
			h.settle(tc.strategy, tc.obs, tc.now)
			if h.Started != tc.wantStarted || h.Backoff != tc.wantBackoff || h.LastExit != tc.wantExit {
				t.Fatalf("history %+v", h)
			}
		})
	}
}

func TestExitKind(t *testing.T) {
	tests := []struct {
		name string
		obs  hypervisor.DomainState
		want hypervisor.ExitKind
	}{
		{name: "running", obs: running, want: hypervisor.ExitNone},
		{name: "absent", obs: absent, want: hypervisor.ExitNone},
		{name: "killed", obs: crashed, want: hypervisor.ExitFailure},
		{name: "guest crash", obs: hypervisor.DomainState{Exists: true, Reason: "crashed"}, want: hypervisor.ExitFailure},
		{name: "libvirtd lost it", obs: hypervisor.DomainState{Exists: true, Reason: "daemon"}, want: hypervisor.ExitFailure},
		{name: "powered off", obs: poweroff, want: hypervisor.ExitShutdown},
		{name: "destroyed", obs: destroyed, want: hypervisor.ExitDestroyed},
		{name: "host reboot", obs: neverRan, want: hypervisor.ExitUnknown},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.obs.Exit(); got != tc.want {
				t.Fatalf("Exit() = %q, want %q", got, tc.want)
			}
		})
	}
}
