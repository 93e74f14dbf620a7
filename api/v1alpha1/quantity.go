package v1alpha1

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/api/resource"
)

// Quantity is a Kubernetes quantity kept in the form the user wrote it
// ("4Gi", "2", 2). It is stored as text and parsed during validation so a
// malformed value becomes a field error with its path, not a decode failure.
// The empty string means "not set".
type Quantity string

// UnmarshalJSON accepts a JSON string or number.
func (q *Quantity) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if string(b) == "null" {
		*q = ""
		return nil
	}
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*q = Quantity(s)
		return nil
	}
	var n json.Number
	if err := json.Unmarshal(b, &n); err != nil {
		return fmt.Errorf("quantity must be a string or a number")
	}
	*q = Quantity(n.String())
	return nil
}

// MarshalJSON writes canonical integers ("2", "-1") as numbers, as the user
// most likely wrote them, and everything else as strings. "007" or "+5"
// parse as integers but are not valid JSON numbers, so they stay strings.
func (q Quantity) MarshalJSON() ([]byte, error) {
	if v, err := strconv.ParseInt(string(q), 10, 64); err == nil && strconv.FormatInt(v, 10) == string(q) {
		return []byte(q), nil
	}
	return json.Marshal(string(q))
}

// Limits on the text of a quantity. apimachinery parses "9E54775807"
// happily, but comparing such a value scales a big decimal by 10^54775807
// (tens of seconds of CPU, found by FuzzQuantity): one API request could
// stall validation. No size vmd deals with needs more than a handful of
// exponent digits, so anything beyond these bounds is refused up front.
const (
	maxQuantityLen      = 64
	maxQuantityExponent = 30
)

// Parse returns the parsed quantity; the error text is apimachinery's,
// except for the length and exponent bounds above.
func (q Quantity) Parse() (resource.Quantity, error) {
	s := string(q)
	if len(s) > maxQuantityLen {
		return resource.Quantity{}, fmt.Errorf("quantity is longer than %d characters", maxQuantityLen)
	}
	// A decimal exponent is the only way to a huge scale: "e" or "E"
	// followed by a signed integer ("1E" alone is the exa suffix, "Ei" exbi).
	if i := strings.LastIndexAny(s, "eE"); i >= 0 && i+1 < len(s) {
		if n, err := strconv.Atoi(s[i+1:]); err == nil && (n > maxQuantityExponent || n < -maxQuantityExponent) {
			return resource.Quantity{}, fmt.Errorf("quantity exponent %d is out of range (at most ±%d)", n, maxQuantityExponent)
		}
	}
	return resource.ParseQuantity(s)
}

// Bytes returns the value as an integer (rounded up), for sizes.
func (q Quantity) Bytes() (int64, error) {
	p, err := q.Parse()
	if err != nil {
		return 0, err
	}
	v, ok := p.AsInt64()
	if !ok {
		// Fractional or huge: round up through the scaled value.
		v = p.Value()
	}
	return v, nil
}

// MustBytes is Bytes for validated specs; it returns 0 on error.
func (q Quantity) MustBytes() int64 {
	v, _ := q.Bytes()
	return v
}
