package main

import (
	"encoding/json"
	"fmt"
	"net/http"
)

// apiError is a failure rendered as a metav1.Status, the only error body
// client-go and kubectl know how to interpret (reason drives
// apierrors.IsNotFound, IsConflict, IsGone, ...).
type apiError struct {
	code    int
	reason  string
	message string
	details map[string]any
}

func (e *apiError) Error() string { return e.message }

func (e *apiError) status() map[string]any {
	s := map[string]any{
		"kind":       "Status",
		"apiVersion": "v1",
		"metadata":   map[string]any{},
		"status":     "Failure",
		"message":    e.message,
		"reason":     e.reason,
		"code":       e.code,
	}
	if e.details != nil {
		s["details"] = e.details
	}
	return s
}

// reasonForCode mirrors apierrors.NewGenericServerResponse, used for codes
// injected through /fake/fail.
func reasonForCode(code int) string {
	switch code {
	case 400:
		return "BadRequest"
	case 401:
		return "Unauthorized"
	case 403:
		return "Forbidden"
	case 404:
		return "NotFound"
	case 405:
		return "MethodNotAllowed"
	case 406:
		return "NotAcceptable"
	case 409:
		return "Conflict"
	case 410:
		return "Expired"
	case 413:
		return "RequestEntityTooLarge"
	case 415:
		return "UnsupportedMediaType"
	case 422:
		return "Invalid"
	case 429:
		return "TooManyRequests"
	case 500:
		return "InternalError"
	case 503:
		return "ServiceUnavailable"
	case 504:
		return "Timeout"
	default:
		return "Unknown"
	}
}

func details(res *resource, name string) map[string]any {
	d := map[string]any{"name": name, "kind": res.plural}
	if res.group != "" {
		d["group"] = res.group
	}
	return d
}

func errNotFound(res *resource, name string) *apiError {
	return &apiError{404, "NotFound", fmt.Sprintf("%s %q not found", res.groupResource(), name), details(res, name)}
}

func errAlreadyExists(res *resource, name string) *apiError {
	return &apiError{409, "AlreadyExists", fmt.Sprintf("%s %q already exists", res.groupResource(), name), details(res, name)}
}

func errConflict(res *resource, name, why string) *apiError {
	return &apiError{409, "Conflict", fmt.Sprintf("Operation cannot be fulfilled on %s %q: %s", res.groupResource(), name, why), details(res, name)}
}

func errBadRequest(msg string) *apiError {
	return &apiError{400, "BadRequest", msg, nil}
}

// errInvalid matches apierrors.NewInvalid: message "<Kind> "<name>" is
// invalid: <field>: <detail>" and one cause per field.
func errInvalid(res *resource, name, field, causeReason, detail string) *apiError {
	d := map[string]any{"name": name, "group": res.group, "kind": res.kind,
		"causes": []any{map[string]any{"reason": causeReason, "message": detail, "field": field}}}
	return &apiError{422, "Invalid", fmt.Sprintf("%s %q is invalid: %s: %s", res.kind, name, field, detail), d}
}

func errGenericNotFound() *apiError {
	return &apiError{404, "NotFound", "the server could not find the requested resource", map[string]any{}}
}

func errMethodNotAllowed() *apiError {
	return &apiError{405, "MethodNotAllowed", "the server does not allow this method on the requested resource", map[string]any{}}
}

func errExpired(requested, oldest int64) *apiError {
	return &apiError{410, "Expired", fmt.Sprintf("too old resource version: %d (%d)", requested, oldest), nil}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		code = 500
		b = []byte(`{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"encode error","reason":"InternalError","code":500}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-cache, private")
	w.WriteHeader(code)
	w.Write(b)
	w.Write([]byte("\n"))
}

func writeError(w http.ResponseWriter, e *apiError) {
	if e.code == 429 {
		// What the real max-in-flight filter sends; client-go honours it.
		w.Header().Set("Retry-After", "1")
	}
	writeJSON(w, e.code, e.status())
}
