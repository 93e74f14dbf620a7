package lab

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/vmdhq/vmd/test/images"
)

// DomainTypeEnv names the environment variable that forces the libvirt domain type
// ("kvm" or "qemu") instead of probing.
const DomainTypeEnv = "VMD_LAB_DOMAIN_TYPE"

// KVMProbeTimeout bounds the KVM probe: the tiny guest reaches its port in about 4 s under TCG
// and well under 1 s with working KVM, so a guest that is silent this long has a broken KVM
// (nested virtualisation that emulates or hangs).
var KVMProbeTimeout = 20 * time.Second

// probeIP is the address of the probe guest; tests should not use it.
var probeIP = netip.MustParseAddr("10.77.0.254")

// domainType caches the decision for the whole test process: the host does not change between
// tests, and the probe costs seconds.
var domainType struct {
	sync.Mutex
	value string
}

// DomainType returns the libvirt domain type guests (and vmd) should use on this host, deciding
// once per process: VMD_LAB_DOMAIN_TYPE if set; "qemu" (TCG) without /dev/kvm; otherwise "kvm"
// if the tiny guest boots under KVM to its TCP port within KVMProbeTimeout, else "qemu". Some
// hosts offer /dev/kvm through nested virtualisation that cannot boot Linux (the guest hangs
// after "Probing EDD"), which only a real boot reveals. The decision is logged.
func (l *Lab) DomainType(ctx context.Context) (string, error) {
	domainType.Lock()
	defer domainType.Unlock()
	if domainType.value != "" {
		return domainType.value, nil
	}
	value, why, err := l.decideDomainType(ctx)
	if err != nil {
		return "", err
	}
	l.logf("lab: domain type %s (%s)", value, why)
	domainType.value = value
	return value, nil
}

func (l *Lab) decideDomainType(ctx context.Context) (value, why string, err error) {
	switch env := strings.TrimSpace(os.Getenv(DomainTypeEnv)); env {
	case "kvm", "qemu":
		return env, "from " + DomainTypeEnv, nil
	case "":
	default:
		return "", "", fmt.Errorf("%s=%q: want kvm or qemu", DomainTypeEnv, env)
	}
	if _, err := os.Stat("/dev/kvm"); err != nil {
		return "qemu", "no /dev/kvm", nil
	}
	start := time.Now()
	g, err := l.DefineGuest(ctx, GuestSpec{
		Name: l.Name + "-kvm-probe", Image: images.Tiny, IP: probeIP, DomainType: "kvm",
	})
	if err != nil {
		return "", "", fmt.Errorf("probing kvm: %w", err)
	}
	defer func() {
		if derr := g.Destroy(context.WithoutCancel(ctx)); derr != nil && err == nil {
			err = fmt.Errorf("probing kvm: %w", derr)
		}
	}()
	if err := g.Start(ctx); err != nil {
		return "qemu", fmt.Sprintf("kvm guest did not start: %v", err), nil
	}
	if _, err := g.WaitPort(ctx, InLab, TinyIDPort, KVMProbeTimeout); err != nil {
		last := strings.TrimSpace(g.ConsoleTail(1))
		return "qemu", fmt.Sprintf("kvm guest did not reach tcp/%d within %s; last console line %q",
			TinyIDPort, KVMProbeTimeout, last), nil
	}
	return "kvm", fmt.Sprintf("tiny guest booted under kvm to tcp/%d in %.1fs",
		TinyIDPort, time.Since(start).Seconds()), nil
}

// Ports the tiny guest answers on, each answer naming its instance-id.
const (
	// TinySSHPort answers with an SSH-style banner "SSH-2.0-vmdlab-tiny <instance-id>".
	TinySSHPort uint16 = 22
	// TinyHTTPPort serves GET / -> "vmdlab-tiny instance-id=<instance-id>".
	TinyHTTPPort uint16 = 80
	// TinyIDPort sends the instance-id alone and closes.
	TinyIDPort uint16 = 7777
)
