package clienttest

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"

	"github.com/vmdhq/vmd/api/v1alpha1"
	"github.com/vmdhq/vmd/internal/client"
)

// imagesPrefix is the golden-image collection path.
const imagesPrefix = "/apis/" + client.ImagesGroupVersion + "/images"

// maxUpload bounds what the fake keeps of one upload; tests upload
// kilobytes to megabytes.
const maxUpload = 256 << 20

// Uploaded returns the bytes last uploaded to the VMDisk namespace/name,
// or nil when none were.
func (s *Server) Uploaded(namespace, name string) []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.uploads[key{v1alpha1.KindVMDisk, namespace, name}])
}

// SetImage adds img to the fake's golden catalogue, or replaces the entry
// of the same name. A Ready image counts as cached.
func (s *Server) SetImage(img client.Image) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.images[img.Name] = img
}

// Image returns the catalogue entry called name.
func (s *Server) Image(name string) (client.Image, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	img, ok := s.images[name]
	return img, ok
}

// upload serves PUT .../vmdisks/{name}/upload as vmd does: only a disk
// whose source is upload{} takes data; the disk then becomes Ready (or
// whatever OnUpload makes of it).
func (s *Server) upload(w http.ResponseWriter, r *http.Request) {
	kind, ok := kindOf(w, r)
	if !ok {
		return
	}
	ns, name := r.PathValue("ns"), r.PathValue("name")
	if kind != v1alpha1.KindVMDisk {
		writeStatus(w, Status(http.StatusNotFound, v1alpha1.StatusReasonNotFound, kind.Plural()+" have no upload subresource: only vmdisks do"))
		return
	}
	if ct := r.Header.Get("Content-Type"); ct != "" && ct != client.UploadContentType {
		writeStatus(w, Status(http.StatusUnsupportedMediaType, v1alpha1.StatusReasonUnsupportedMediaType, "unsupported upload type "+ct))
		return
	}
	obj := s.Object(kind, ns, name)
	if obj == nil {
		writeStatus(w, notFound(kind, name))
		return
	}
	if src := obj.(*v1alpha1.VMDisk).Spec.Source; src.Upload == nil {
		writeStatus(w, Status(http.StatusConflict, v1alpha1.StatusReasonConflict,
			fmt.Sprintf("vmdisk %s/%s does not accept uploads: its source is %s, and only a disk with source upload: {} waits for data", ns, name, src.Type())))
		return
	}
	data, err := io.ReadAll(io.LimitReader(r.Body, maxUpload))
	if err != nil {
		writeStatus(w, Status(http.StatusBadRequest, v1alpha1.StatusReasonBadRequest, "reading upload: "+err.Error()))
		return
	}

	s.mu.Lock()
	k := key{kind, ns, name}
	s.uploads[k] = data
	var res client.UploadResult
	if cur, ok := s.objects[k]; ok {
		d := cur.DeepCopyObject().(*v1alpha1.VMDisk)
		if s.OnUpload != nil {
			s.OnUpload(d, data)
		} else {
			markUploaded(d)
		}
		s.store(v1alpha1.Modified, k, d)
		res = client.UploadResult{Namespace: ns, Name: name, BytesReceived: int64(len(data)),
			Ready: d.Status.Phase == v1alpha1.DiskPhaseReady, Path: d.Status.Path, Format: d.Status.Format, SizeBytes: d.Status.Size}
	}
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, res)
}

// markUploaded is the default OnUpload: the controller saw a complete
// qcow2 volume of the requested size.
func markUploaded(d *v1alpha1.VMDisk) {
	d.Status.Phase = v1alpha1.DiskPhaseReady
	d.Status.Progress = "100.0%"
	d.Status.Size = d.Spec.Storage.MustBytes()
	d.Status.Format = "qcow2"
	d.Status.Path = "/var/lib/vmd/pools/" + d.Spec.StorageClass + "/" + d.ObjectMeta.UID + ".qcow2"
	d.Status.ObservedGeneration = d.ObjectMeta.Generation
	v1alpha1.SetCondition(&d.Status.Conditions, v1alpha1.Condition{
		Type: v1alpha1.ConditionReady, Status: v1alpha1.ConditionTrue, Reason: "Ready",
		ObservedGeneration: d.ObjectMeta.Generation,
	}, v1alpha1.Now().Time)
}

// listImages serves the cached images (?all=true: the whole catalogue).
func (s *Server) listImages(w http.ResponseWriter, r *http.Request) {
	all := r.URL.Query().Get("all") == "true"
	s.mu.Lock()
	items := []client.Image{}
	for _, img := range s.images {
		if all || img.Ready {
			items = append(items, img)
		}
	}
	s.mu.Unlock()
	slices.SortFunc(items, func(a, b client.Image) int { return strings.Compare(a.Name, b.Name) })
	writeJSON(w, http.StatusOK, map[string]any{"apiVersion": client.ImagesGroupVersion, "kind": "ImageList", "items": items})
}

// pullImage streams PullSteps progress lines (none for a cached image),
// then marks the image Ready and sends it, as vmd's NDJSON pull does.
func (s *Server) pullImage(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	img, ok := s.Image(name)
	if !ok {
		s.mu.Lock()
		names := make([]string, 0, len(s.images))
		for n := range s.images {
			names = append(names, n)
		}
		s.mu.Unlock()
		slices.Sort(names)
		writeStatus(w, Status(http.StatusNotFound, v1alpha1.StatusReasonNotFound,
			fmt.Sprintf("golden image %q not found; known images: %s", name, strings.Join(names, ", "))))
		return
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	flusher, _ := w.(http.Flusher)
	enc := json.NewEncoder(w)
	if !img.Ready {
		total := img.ActualSize
		if total <= 0 {
			total = 1 << 20
		}
		steps := s.PullSteps
		if steps <= 0 {
			steps = 4
		}
		for i := 1; i <= steps; i++ {
			if enc.Encode(map[string]int64{"done": total * int64(i) / int64(steps), "total": total}) != nil {
				return
			}
			if flusher != nil {
				flusher.Flush()
			}
		}
		img.Ready, img.ActualSize = true, total
		s.SetImage(img)
	}
	_ = enc.Encode(map[string]any{"image": img})
}
