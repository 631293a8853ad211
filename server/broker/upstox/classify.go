package upstox

import (
	"encoding/json"
	"net/http"

	"github.com/feedgate/feedgate/server/broker"
)

// rule is one row of the error table. A row matches when its status (0:
// any) and its code ("": any) both match; the first matching row wins.
type rule struct {
	status int
	code   string
	class  broker.Class
	field  string
	msg    string
}

// rules is Upstox's error table, from brokers.md §1.8–1.10. Auth-dead rows
// come first so no other signal can hide a dead token, then rate limits,
// then codes (more precise than statuses), then statuses.
var rules = []rule{
	{status: http.StatusUnauthorized, class: broker.ClassAuthDead, msg: "token rejected"},
	{code: "UDAPI100050", class: broker.ClassAuthDead, msg: "invalid token"},
	// An extended_token used where it is not permitted. feedgate only
	// stores OAuth access tokens, so this means the stored token is of the
	// wrong kind, and logging in again is what fixes it.
	{code: "UDAPI100067", class: broker.ClassAuthDead, msg: "token not permitted for this API"},
	{status: http.StatusTooManyRequests, class: broker.ClassRateLimited, msg: "rate limited"},
	// UNCONFIRMED: one third-party client saw UDAPI10005 under a 2xx.
	{code: "UDAPI10005", class: broker.ClassRateLimited, msg: "rate limited"},
	{code: "UDAPI1009", class: broker.ClassBadInput, field: "instrument_key", msg: "instrument key missing"},
	{code: "UDAPI1011", class: broker.ClassBadInput, field: "instrument_key", msg: "instrument key malformed"},
	{code: "UDAPI1087", class: broker.ClassBadInput, field: "instrument_key", msg: "instrument key invalid"},
	{code: "UDAPI100043", class: broker.ClassBadInput, field: "instrument_key", msg: "too many instrument keys"},
	{code: "UDAPI100036", class: broker.ClassBadInput, msg: "invalid input"},
	{code: "UDAPI100038", class: broker.ClassBadInput, msg: "invalid input"},
	// Outside the service window (funds, 05:30–00:00 IST): temporary and
	// not the user's fault, but a retry within seconds cannot help, and
	// only 5xx are retried.
	{status: http.StatusLocked, class: broker.ClassUpstream, msg: "outside the broker's service window"},
	{code: "UDAPI100072", class: broker.ClassUpstream, msg: "outside the broker's service window"},
	{status: http.StatusBadRequest, class: broker.ClassBadInput, msg: "request refused as invalid"},
	// 403 means a permission the app or account lacks (feed permission,
	// static IP for account APIs); access tokens that die get 401. Treating
	// it as auth-dead would loop the user through logins that cannot fix
	// it, so it is an upstream failure (Unavailable), not retried.
	{status: http.StatusForbidden, class: broker.ClassUpstream, msg: "permission denied by broker"},
	// 404 (UDAPI10000, unsupported URL) is a gateway/broker mismatch, not
	// the user's input: upstream, not retried.
	{status: http.StatusNotFound, class: broker.ClassUpstream, msg: "endpoint not found"},
	// Everything else, 5xx included, is upstream; only 5xx are retried.
	{class: broker.ClassUpstream, msg: "broker error"},
}

// allowedFields are the propertyPath values that may name Error.Field.
var allowedFields = map[string]bool{"instrument_key": true, "expiry_date": true, "code": true, "redirect_uri": true}

// problem is one entry of the error envelope's errors[]; both spellings of
// each field are sent (camelCase is deprecated).
type problem struct {
	ErrorCode     string  `json:"errorCode"`
	ErrorCodeOld  string  `json:"error_code"`
	PropertyPath  *string `json:"propertyPath"`
	PropertyPathS *string `json:"property_path"`
}

func (p problem) code() string {
	if p.ErrorCode != "" {
		return p.ErrorCode
	}
	return p.ErrorCodeOld
}

func (p problem) property() string {
	switch {
	case p.PropertyPath != nil && *p.PropertyPath != "":
		return *p.PropertyPath
	case p.PropertyPathS != nil:
		return *p.PropertyPathS
	}
	return ""
}

// envelope is Upstox's {status, errors, data} wrapper.
type envelope[T any] struct {
	Status string    `json:"status"`
	Errors []problem `json:"errors"`
	Data   T         `json:"data"`
}

// failed reports whether the envelope carries an error.
func (e *envelope[T]) failed() bool { return e.Status == "error" || len(e.Errors) > 0 }

// classifyProblems applies the table to status and the problems' codes.
func classifyProblems(status int, ps []problem) *broker.Error {
	for _, r := range rules {
		if r.status != 0 && r.status != status {
			continue
		}
		if r.code == "" {
			e := newError(r, "")
			for _, p := range ps {
				if f := p.property(); e.Field == "" && allowedFields[f] {
					e.Field = f
				}
			}
			if len(ps) > 0 {
				e.Code = ps[0].code()
			}
			return e
		}
		for _, p := range ps {
			if p.code() == r.code {
				e := newError(r, r.code)
				if f := p.property(); e.Field == "" && allowedFields[f] {
					e.Field = f
				}
				return e
			}
		}
	}
	return nil // unreachable: the last row matches everything
}

func newError(r rule, code string) *broker.Error {
	return &broker.Error{Class: r.class, Code: code, Field: r.field, Message: r.msg}
}

// classify is the broker.Classifier: 2xx bodies go to the decoder, which
// checks the envelope in the same pass; everything else is classified
// here from the status and the body's codes (if the body parses).
func classify(r *broker.Response) *broker.Error {
	if r.Status >= 200 && r.Status <= 299 {
		return nil
	}
	var env envelope[json.RawMessage]
	_ = json.Unmarshal(r.Body, &env) // an unparsable body still has a status
	return classifyProblems(r.Status, env.Errors)
}

// decodeInto reads a 2xx body into env and returns the table's failure when
// the envelope says error (e.g. UDAPI10005 under 200).
func decodeInto[T any](body []byte, env *envelope[T]) error {
	if err := json.Unmarshal(body, env); err != nil {
		// A failed envelope whose data does not fit T (a dead token
		// answered with an unexpected shape) is still classified by its
		// codes, not as an undecodable response.
		var bare envelope[json.RawMessage]
		if json.Unmarshal(body, &bare) == nil && bare.failed() {
			return classifyProblems(http.StatusOK, bare.Errors)
		}
		return err
	}
	if env.failed() {
		return classifyProblems(http.StatusOK, env.Errors)
	}
	if env.Status != "success" {
		return &broker.Error{Class: broker.ClassUpstream, Message: "unexpected response status"}
	}
	return nil
}
