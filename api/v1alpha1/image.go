package v1alpha1

// Wire types of vmd's host-level API group (golden images), shared by the
// server and the client. They live here with the other wire types so the
// two ends cannot drift apart.

// ImagesGroupVersion is vmd's own API group for host-level resources that
// have no Cozystack counterpart, such as the golden-image cache. Keeping
// them out of apps.cozystack.io means a manifest tool never mistakes them
// for something it could apply on Hikube.
const ImagesGroupVersion = "vmd.cozystack.io/v1"

// Image is the wire form of one golden image: the cache's view
// of it joined with the catalogue's description, so a
// client can show what an image is without a catalogue of its own.
type Image struct {
	Name string `json:"name"`
	// OS, Version, OSFamily and Kind come from the golden catalogue; they
	// are empty for a cached image the catalogue no longer names.
	OS       string `json:"os,omitempty"`
	Version  string `json:"version,omitempty"`
	OSFamily string `json:"osFamily,omitempty"`
	Kind     string `json:"kind,omitempty"`
	// URL is where the base image is (or will be) downloaded from.
	URL string `json:"url,omitempty"`
	// SHA256 of the downloaded bytes, once known.
	SHA256 string `json:"sha256,omitempty"`
	// Path and Format of the cached base image on the host.
	Path   string `json:"path,omitempty"`
	Format string `json:"format,omitempty"`
	// VirtualSize is the guest-visible size; ActualSize the bytes the
	// cached file takes on the host.
	VirtualSize int64 `json:"virtualSize,omitempty"`
	ActualSize  int64 `json:"actualSize,omitempty"`
	// Ready is true once the base image is complete in the cache.
	Ready bool `json:"ready"`
	// Users are the volumes (namespace/name) built on this base; a base is
	// never deleted while it has users.
	Users []string `json:"users,omitempty"`
}

// ImageList is the response of GET /apis/vmd.cozystack.io/v1/images.
type ImageList struct {
	TypeMeta `json:",inline"`
	Items    []Image `json:"items"`
}

// PullEvent is one line of a pull response. Exactly one member is set:
// progress lines carry Done/Total, the last line Image or Error.
type PullEvent struct {
	// Done and Total count downloaded bytes; Total is 0 when unknown.
	Done  *int64 `json:"done,omitempty"`
	Total *int64 `json:"total,omitempty"`
	// Image is the pulled image; it ends a successful stream.
	Image *Image `json:"image,omitempty"`
	// Error ends a stream whose pull failed after progress was sent (a
	// failure before that is an ordinary Status response).
	Error *Status `json:"error,omitempty"`
}
