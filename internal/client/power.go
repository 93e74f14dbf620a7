package client

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"

	"github.com/vmdhq/vmd/api/v1alpha1"
)

// PowerAction is a power request for a VMInstance.
type PowerAction string

// Power actions, as the server's POST .../vminstances/NAME/ACTION routes
// name them.
const (
	PowerStart   PowerAction = "start"
	PowerStop    PowerAction = "stop"
	PowerRestart PowerAction = "restart"
)

// Power asks vmd to start, stop or restart a VMInstance. The server
// records the request and answers at once with the updated object; the
// domain changes state asynchronously (watch status.phase or Ready).
// start and stop apply to runStrategy Manual only; for the others the
// server answers with a conflict that says to change spec.runStrategy.
func (c *Client) Power(ctx context.Context, namespace, name string, action PowerAction) (*v1alpha1.VMInstance, error) {
	if namespace == "" {
		namespace = v1alpha1.DefaultNamespace
	}
	path, err := resourcePath(v1alpha1.KindVMInstance, namespace, name)
	if err != nil {
		return nil, err
	}
	var raw json.RawMessage
	req := request{method: http.MethodPost, path: path + "/" + url.PathEscape(string(action))}
	if _, _, err := c.call(ctx, req, &raw); err != nil {
		return nil, err
	}
	obj, err := DecodeObject(v1alpha1.KindVMInstance, raw)
	if err != nil {
		return nil, err
	}
	vm, ok := obj.(*v1alpha1.VMInstance)
	if !ok {
		return nil, fmt.Errorf("decoding vminstance: got %T", obj)
	}
	return vm, nil
}
