package v1alpha1

import "time"

// ConditionStatus is True, False or Unknown, as in Kubernetes.
type ConditionStatus string

// Condition statuses.
const (
	ConditionTrue    ConditionStatus = "True"
	ConditionFalse   ConditionStatus = "False"
	ConditionUnknown ConditionStatus = "Unknown"
)

// Condition types shared by both kinds. Kind-specific ones live next to
// their status types.
const (
	// ConditionReady is what `vmctl wait --for=condition=Ready` waits on:
	// for a VMDisk the volume holds its data; for a VMInstance the domain runs.
	ConditionReady = "Ready"
)

// Condition is a Kubernetes metav1.Condition look-alike.
type Condition struct {
	Type               string          `json:"type"`
	Status             ConditionStatus `json:"status"`
	ObservedGeneration int64           `json:"observedGeneration,omitempty"`
	LastTransitionTime *Time           `json:"lastTransitionTime,omitempty"`
	Reason             string          `json:"reason,omitempty"`
	Message            string          `json:"message,omitempty"`
}

// FindCondition returns the condition of the given type, or nil.
func FindCondition(conds []Condition, typ string) *Condition {
	for i := range conds {
		if conds[i].Type == typ {
			return &conds[i]
		}
	}
	return nil
}

// SetCondition adds or updates c in conds. LastTransitionTime changes only
// when the status changes, so watchers can tell how long a state has held.
// It reports whether anything changed.
func SetCondition(conds *[]Condition, c Condition, now time.Time) bool {
	if old := FindCondition(*conds, c.Type); old != nil {
		if old.Status == c.Status && old.Reason == c.Reason && old.Message == c.Message &&
			old.ObservedGeneration == c.ObservedGeneration {
			return false
		}
		if old.Status != c.Status || old.LastTransitionTime == nil {
			c.LastTransitionTime = NewTime(now)
		} else {
			c.LastTransitionTime = old.LastTransitionTime
		}
		*old = c
		return true
	}
	c.LastTransitionTime = NewTime(now)
	*conds = append(*conds, c)
	return true
}

// RemoveCondition deletes the condition of the given type; it reports
// whether one was removed.
func RemoveCondition(conds *[]Condition, typ string) bool {
	for i := range *conds {
		if (*conds)[i].Type == typ {
			*conds = append((*conds)[:i], (*conds)[i+1:]...)
			return true
		}
	}
	return false
}
