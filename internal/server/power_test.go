package server_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/vmdhq/vmd/api/v1alpha1"
)

func vmManifest(name, strategy string) string {
	return `{"apiVersion":"apps.cozystack.io/v1alpha1","kind":"VMInstance","metadata":{"name":"` + name +
		`"},"spec":{"runStrategy":"` + strategy + `"}}`
}

func TestPowerRoutes(t *testing.T) {
	h := start(t, harnessOpts{})
	for _, vm := range []struct{ name, strategy string }{{"man", "Manual"}, {"alw", "Always"}, {"hlt", "Halted"}} {
		if r := h.do(t, http.MethodPost, base+"/namespaces/default/vminstances", "application/json", vmManifest(vm.name, vm.strategy)); r.code != http.StatusCreated {
			t.Fatalf("create %s: %d %s", vm.name, r.code, r.body)
		}
	}
	tests := []struct {
		name, vm, action string
		wantCode         int
		wantState        string // requested-state annotation after the call
		wantRestart      bool
		wantMsg          string
	}{
		{name: "start manual", vm: "man", action: "start", wantCode: http.StatusOK, wantState: v1alpha1.RequestedRunning},
		{name: "stop manual", vm: "man", action: "stop", wantCode: http.StatusOK, wantState: v1alpha1.RequestedStopped},
		{name: "restart manual", vm: "man", action: "restart", wantCode: http.StatusOK, wantState: v1alpha1.RequestedStopped, wantRestart: true},
		{name: "restart always", vm: "alw", action: "restart", wantCode: http.StatusOK, wantRestart: true},
		{name: "stop always refused", vm: "alw", action: "stop", wantCode: http.StatusConflict, wantMsg: "runStrategy Manual"},
		{name: "restart halted refused", vm: "hlt", action: "restart", wantCode: http.StatusConflict, wantMsg: "Halted"},
		{name: "unknown action", vm: "man", action: "pause", wantCode: http.StatusNotFound, wantMsg: "start, stop and restart"},
		{name: "missing vm", vm: "nope", action: "start", wantCode: http.StatusNotFound},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := h.do(t, http.MethodPost, base+"/namespaces/default/vminstances/"+tc.vm+"/"+tc.action, "", "")
			if r.code != tc.wantCode {
				t.Fatalf("code %d, want %d: %s", r.code, tc.wantCode, r.body)
			}
			if r.code != http.StatusOK {
				if st := mustStatus(t, r); !strings.Contains(st.Message, tc.wantMsg) {
					t.Fatalf("message %q lacks %q", st.Message, tc.wantMsg)
				}
				return
			}
			var vm v1alpha1.VMInstance
			mustJSON(t, r.body, &vm)
			a := vm.ObjectMeta.Annotations
			if a[v1alpha1.AnnotationRequestedState] != tc.wantState || (a[v1alpha1.AnnotationRestartRequestedAt] != "") != tc.wantRestart {
				t.Fatalf("annotations %v", a)
			}
			if tc.wantState != "" && a[v1alpha1.AnnotationRequestedAt] == "" {
				t.Fatal("requested-state without a timestamp")
			}
		})
	}
}
