package fyers

import (
	"encoding/json"
	"net/http"
	"strconv"

	"github.com/feedgate/feedgate/server/broker"
)

// rule is one row of the error table. A row matches when its status (0:
// any) and its code (0: any) both match; the first matching row wins.
type rule struct {
	status  int
	code    int
	class   broker.Class
	expired bool
	field   string
	msg     string
}

// rules is Fyers's error table, from brokers.md §2.8–2.9. Auth-dead rows
// come first so no other signal can hide a dead token, then rate limits,
// then codes (more precise than statuses), then statuses.
var rules = []rule{
	{code: -8, class: broker.ClassAuthDead, expired: true, msg: "token expired"},
	{code: -15, class: broker.ClassAuthDead, msg: "invalid token"},
	{code: -16, class: broker.ClassAuthDead, msg: "could not authenticate the token"},
	{code: -17, class: broker.ClassAuthDead, msg: "token invalid or expired"},
	{status: http.StatusUnauthorized, class: broker.ClassAuthDead, msg: "token rejected"},
	// 403 is Fyers's "permission" status and what a bad token gets on the
	// trade socket; brokers.md §2.8 says to treat 401/403 as re-login,
	// whatever code the body carries.
	{status: http.StatusForbidden, class: broker.ClassAuthDead, msg: "permission denied"},
	{status: http.StatusTooManyRequests, class: broker.ClassRateLimited, msg: "rate limited"},
	{code: -429, class: broker.ClassRateLimited, msg: "rate limited"},
	{code: -50, class: broker.ClassBadInput, msg: "invalid parameters"},
	{code: -300, class: broker.ClassBadInput, field: "instrument_key", msg: "invalid symbol"},
	// -352 is "invalid App ID" (and, on positions, "nothing to exit").
	{code: -352, class: broker.ClassBadInput, msg: "invalid app id"},
	{status: http.StatusBadRequest, class: broker.ClassBadInput, msg: "request refused as invalid"},
	// Everything else, 5xx included, is upstream; only 5xx are retried.
	// That covers s:"error" under 200 with a code not listed above.
	{class: broker.ClassUpstream, msg: "broker error"},
}

// classifyCode applies the table to an HTTP status and body code (0 when
// the body had none).
func classifyCode(status, code int) *broker.Error {
	for _, r := range rules {
		if (r.status == 0 || r.status == status) && (r.code == 0 || r.code == code) {
			e := &broker.Error{Class: r.class, Expired: r.expired, Field: r.field, Message: r.msg}
			if code != 0 {
				e.Code = strconv.Itoa(code)
			}
			return e
		}
	}
	return nil // unreachable: the last row matches everything
}

// status is the part of every Fyers answer that says how it went. Success
// is s == "ok" (some success codes are not 200).
type status struct {
	S       string `json:"s"`
	Code    int    `json:"code"`
	Message string `json:"message"`
}

// failure returns the table's failure for a body whose s is not "ok".
func (s *status) failure(httpStatus int) error {
	if s.S == "ok" {
		return nil
	}
	return classifyCode(httpStatus, s.Code)
}

// decodeBody reads a 2xx body into v. When the body does not fit v but its
// status says the call failed (a dead token answered with an unexpected
// shape), the status's failure is returned, so such an answer is still
// classified by its code rather than as an undecodable response.
func decodeBody(b []byte, v any) error {
	err := json.Unmarshal(b, v)
	if err == nil {
		return nil
	}
	var s status
	if json.Unmarshal(b, &s) == nil {
		if f := s.failure(http.StatusOK); f != nil {
			return f
		}
	}
	return err
}

// classify is the broker.Classifier: 2xx bodies go to the decoder, which
// checks s in the same pass; everything else is classified here from the
// status and the body's code (if the body parses).
func classify(r *broker.Response) *broker.Error {
	if r.Status >= 200 && r.Status <= 299 {
		return nil
	}
	var s status
	_ = json.Unmarshal(r.Body, &s) // an unparsable body still has a status
	return classifyCode(r.Status, s.Code)
}
