package report

import (
	"encoding/json"
	"io"
)

// JSON writes v as indented JSON: every result of fleetgate-bench for
// scripts (-json, -json-out), field names as their json tags say.
func JSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
