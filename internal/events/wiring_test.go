package events_test

import (
	"github.com/vmdhq/vmd/internal/controller"
	"github.com/vmdhq/vmd/internal/events"
	"github.com/vmdhq/vmd/internal/server"
)

// The composition root hands one *Recorder to the controller (to record)
// and to the server (to list); these fail to compile if either narrow
// interface drifts from it.
var (
	_ controller.EventRecorder = (*events.Recorder)(nil)
	_ server.EventLister       = (*events.Recorder)(nil)
)
