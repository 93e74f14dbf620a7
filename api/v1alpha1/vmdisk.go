package v1alpha1

import "encoding/json"

// VMDisk is a virtual disk: a volume on the host filled from a source.
type VMDisk struct {
	TypeMeta   `json:",inline"`
	ObjectMeta ObjectMeta   `json:"metadata"`
	Spec       VMDiskSpec   `json:"spec"`
	Status     VMDiskStatus `json:"status,omitempty"`
}

// VMDiskSpec is the desired state of a disk.
type VMDiskSpec struct {
	// Source says where the data comes from; at most one member is set.
	// An empty source means a blank disk.
	Source DiskSource `json:"source"`
	// Optical marks an ISO, attached read-only as a cdrom.
	Optical *bool `json:"optical,omitempty"`
	// Storage is the virtual size (Kubernetes quantity); default 5Gi.
	// It may grow later, never shrink.
	Storage Quantity `json:"storage,omitempty"`
	// StorageClass picks the pool (local, replicated, ...); default
	// replicated. Immutable after creation.
	StorageClass string `json:"storageClass,omitempty"`
}

// DiskSource is a one-of; the zero value is a blank disk.
type DiskSource struct {
	HTTP   *HTTPSource   `json:"http,omitempty"`
	Image  *ImageSource  `json:"image,omitempty"`
	Upload *UploadSource `json:"upload,omitempty"`
	Disk   *DiskClone    `json:"disk,omitempty"`
}

// HTTPSource downloads an image from an http(s) URL.
type HTTPSource struct {
	URL string `json:"url"`
	// SHA256, when set, is checked against the downloaded bytes
	// (a vmd extension; Cozystack has no checksum field).
	SHA256 string `json:"sha256,omitempty"`
}

// ImageSource names a golden image from the catalogue.
type ImageSource struct {
	Name string `json:"name"`
}

// UploadSource waits for the data to be uploaded (`vmctl upload`).
type UploadSource struct{}

// DiskClone copies another VMDisk of the same namespace.
type DiskClone struct {
	Name string `json:"name"`
}

// SourceType names the member set in a DiskSource.
type SourceType string

// Source types.
const (
	SourceBlank  SourceType = "blank"
	SourceHTTP   SourceType = "http"
	SourceImage  SourceType = "image"
	SourceUpload SourceType = "upload"
	SourceDisk   SourceType = "disk"
)

// Types returns the members that are set, in field order.
func (s DiskSource) Types() []SourceType {
	var out []SourceType
	if s.HTTP != nil {
		out = append(out, SourceHTTP)
	}
	if s.Image != nil {
		out = append(out, SourceImage)
	}
	if s.Upload != nil {
		out = append(out, SourceUpload)
	}
	if s.Disk != nil {
		out = append(out, SourceDisk)
	}
	return out
}

// Type returns the single source type, or blank when none is set. Call it
// only on a validated spec (which has at most one).
func (s DiskSource) Type() SourceType {
	if t := s.Types(); len(t) > 0 {
		return t[0]
	}
	return SourceBlank
}

// VMDisk phases, as CDI's DataVolume phases simplified.
const (
	DiskPhasePending   = "Pending"
	DiskPhaseImporting = "Importing"
	DiskPhaseUploading = "WaitingForUpload"
	DiskPhaseReady     = "Ready"
	DiskPhaseFailed    = "Failed"
	DiskPhaseDeleting  = "Terminating"
)

// VMDisk condition types besides Ready.
const (
	// ConditionReplicated tells whether the storage class really replicates.
	ConditionReplicated = "Replicated"
	// ConditionInUse is True while a VMInstance holds the disk.
	ConditionInUse = "InUse"
)

// VMDiskStatus is what vmd observed about a disk.
type VMDiskStatus struct {
	Phase              string      `json:"phase,omitempty"`
	ObservedGeneration int64       `json:"observedGeneration,omitempty"`
	Conditions         []Condition `json:"conditions,omitempty"`
	// Progress is the import progress as a percentage string ("42.5%").
	Progress string `json:"progress,omitempty"`
	// BytesDone and BytesTotal count fetched source bytes during import.
	BytesDone  int64 `json:"bytesDone,omitempty"`
	BytesTotal int64 `json:"bytesTotal,omitempty"`
	// Size is the volume's virtual size in bytes once it exists.
	Size int64 `json:"size,omitempty"`
	// Format is the volume format (qcow2, raw, iso).
	Format string `json:"format,omitempty"`
	// Path is the volume file on the host.
	Path string `json:"path,omitempty"`
	// BackingFile is the read-only base image the volume is a
	// copy-on-write overlay of (a golden image in vmd's cache), empty for a
	// standalone volume; BackingFormat is its format.
	BackingFile   string `json:"backingFile,omitempty"`
	BackingFormat string `json:"backingFormat,omitempty"`
	// SHA256 of the imported source bytes.
	SHA256 string `json:"sha256,omitempty"`
	// UsedBy lists VMInstances that attach the disk.
	UsedBy []string `json:"usedBy,omitempty"`
}

// GetTypeMeta implements Object.
func (d *VMDisk) GetTypeMeta() *TypeMeta { return &d.TypeMeta }

// GetObjectMeta implements Object.
func (d *VMDisk) GetObjectMeta() *ObjectMeta { return &d.ObjectMeta }

// SpecJSON implements Object.
func (d *VMDisk) SpecJSON() ([]byte, error) { return json.Marshal(d.Spec) }

// GetConditions implements Object.
func (d *VMDisk) GetConditions() []Condition { return d.Status.Conditions }

// CopyStatusFrom implements Object.
func (d *VMDisk) CopyStatusFrom(o Object) {
	if src, ok := o.(*VMDisk); ok {
		d.Status = *deepCopy(&src.Status)
	}
}

// DeepCopyObject implements Object.
func (d *VMDisk) DeepCopyObject() Object { return deepCopy(d) }
