package madsidecar

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Error codes of protocol v1.
const (
	CodeBadFrame      = "BAD_FRAME"
	CodeFrameTooLarge = "FRAME_TOO_LARGE"
	CodeBadRequest    = "BAD_REQUEST"
	CodeUnknownMethod = "UNKNOWN_METHOD"
	CodeForbidden     = "FORBIDDEN"
	CodeUnavailable   = "UNAVAILABLE"
	CodeNotHeld       = "NOT_HELD"
	CodeTimeout       = "TIMEOUT"
	CodeShuttingDown  = "SHUTTING_DOWN"
	CodeInternal      = "INTERNAL"
)

// ServerError is an error the sidecar answered with (or sent in an `error`
// notification). Fields holds the whole error map, code and message included, so
// additions such as `argument`, `retry_after_ms` or `error_id` are never lost.
//
// Compare with errors.Is against the sentinels: errors.Is(err, ErrNotHeld) is true
// for any *ServerError whose Code is NOT_HELD. An unknown code is still a *ServerError
// (match it with errors.As, or errors.Is(err, ErrUnknownCode)).
type ServerError struct {
	Code    string
	Message string
	Fields  map[string]any
}

func (e *ServerError) Error() string {
	if e.Message == "" {
		return "madsidecar: " + e.Code
	}
	return "madsidecar: " + e.Code + ": " + e.Message
}

// Is reports whether target is a *ServerError with the same code. ErrServer matches
// every server error, ErrUnknownCode every code this SDK does not know.
func (e *ServerError) Is(target error) bool {
	t, ok := target.(*ServerError)
	if !ok {
		return false
	}
	switch t {
	case ErrServer:
		return true
	case ErrUnknownCode:
		_, known := knownCodes[e.Code]
		return !known
	}
	return t.Code == e.Code
}

// Argument is the argument at fault (BAD_REQUEST, FORBIDDEN), or "".
func (e *ServerError) Argument() string {
	s, _ := e.Fields["argument"].(string)
	return s
}

// RetryAfterMs is the `retry_after_ms` an UNAVAILABLE error carries (0 if none).
func (e *ServerError) RetryAfterMs() int64 {
	n, _ := e.Fields["retry_after_ms"].(int64)
	return n
}

// RetryAfter is RetryAfterMs as a duration.
func (e *ServerError) RetryAfter() time.Duration {
	return time.Duration(e.RetryAfterMs()) * time.Millisecond
}

// ErrorID is the `error_id` an INTERNAL error carries (also in the sidecar's log), or "".
func (e *ServerError) ErrorID() string {
	s, _ := e.Fields["error_id"].(string)
	return s
}

// Sentinels, one per error code, for errors.Is.
var (
	ErrBadFrame      = &ServerError{Code: CodeBadFrame}
	ErrBadRequest    = &ServerError{Code: CodeBadRequest}
	ErrUnknownMethod = &ServerError{Code: CodeUnknownMethod}
	ErrForbidden     = &ServerError{Code: CodeForbidden}
	ErrUnavailable   = &ServerError{Code: CodeUnavailable}
	ErrNotHeld       = &ServerError{Code: CodeNotHeld}
	// ErrServerTimeout is the sidecar's code TIMEOUT: a wait the call asked for
	// (cache.fetch's wait_ms) ran out. A reply that did not come in time on the client's
	// side is ErrTimeout instead.
	ErrServerTimeout = &ServerError{Code: CodeTimeout}
	ErrShuttingDown  = &ServerError{Code: CodeShuttingDown}
	ErrInternal      = &ServerError{Code: CodeInternal}
	// ErrFrameTooLarge matches both the sidecar's FRAME_TOO_LARGE and the client's own
	// refusal of a frame over its limit (a *FrameTooLargeError), in either direction.
	ErrFrameTooLarge = &ServerError{Code: CodeFrameTooLarge}

	// ErrServer matches every *ServerError, whatever its code.
	ErrServer = &ServerError{Code: "*"}
	// ErrUnknownCode matches a *ServerError whose code this SDK does not know.
	ErrUnknownCode = &ServerError{Code: "?"}
)

var knownCodes = map[string]struct{}{
	CodeBadFrame: {}, CodeFrameTooLarge: {}, CodeBadRequest: {}, CodeUnknownMethod: {},
	CodeForbidden: {}, CodeUnavailable: {}, CodeNotHeld: {}, CodeTimeout: {},
	CodeShuttingDown: {}, CodeInternal: {},
}

// Client-side errors.
var (
	// ErrClosed: the client was closed, or the connection is gone (a lost connection's
	// error also matches ErrConnectionLost).
	ErrClosed = errors.New("madsidecar: connection closed")
	// ErrConnectionLost: the connection dropped before the reply came (the call may or
	// may not have run), or it is down and reconnecting is off.
	ErrConnectionLost = errors.New("madsidecar: connection lost")
	// ErrTimeout: no reply within the call's client-side timeout. When the deadline came
	// from the call's context, the error also matches context.DeadlineExceeded.
	ErrTimeout = errors.New("madsidecar: call timed out")
	// ErrProtocol: the sidecar sent something this SDK cannot read; the connection is
	// closed.
	ErrProtocol = errors.New("madsidecar: protocol violation")
)

func errorFromMap(v any) *ServerError {
	m, ok := v.(map[string]any)
	if !ok {
		return &ServerError{Code: "", Message: fmt.Sprintf("malformed error: %v", v)}
	}
	code, _ := m["code"].(string)
	msg, _ := m["message"].(string)
	return &ServerError{Code: code, Message: msg, Fields: m}
}

type protocolError struct{ msg string }

func (e *protocolError) Error() string        { return "madsidecar: protocol violation: " + e.msg }
func (e *protocolError) Is(target error) bool { return target == ErrProtocol }

func protocolErrorf(format string, args ...any) error {
	return &protocolError{msg: fmt.Sprintf(format, args...)}
}

// FrameTooLargeError is the client's refusal of a frame over a limit: Incoming, a frame
// from the sidecar over Options.MaxFrameBytes (the connection is closed without reading
// its body, and pending calls fail with this error; it also matches ErrProtocol);
// otherwise a request over the sidecar's max_frame_bytes, not sent.
type FrameTooLargeError struct {
	Size     uint64
	Limit    int
	Incoming bool
}

func (e *FrameTooLargeError) Error() string {
	if e.Incoming {
		return fmt.Sprintf("madsidecar: protocol violation: the sidecar sent a %d-byte frame, over the client's max_frame_bytes %d; connection closed", e.Size, e.Limit)
	}
	return fmt.Sprintf("madsidecar: request of %d bytes is over max_frame_bytes %d; not sent", e.Size, e.Limit)
}

// Is matches ErrFrameTooLarge, and ErrProtocol for an incoming frame.
func (e *FrameTooLargeError) Is(target error) bool {
	return target == ErrFrameTooLarge || (e.Incoming && target == ErrProtocol)
}

type connLostError struct {
	msg   string
	cause error
}

func (e *connLostError) Error() string {
	if e.cause != nil {
		return "madsidecar: connection lost: " + e.msg + ": " + e.cause.Error()
	}
	return "madsidecar: connection lost: " + e.msg
}
func (e *connLostError) Unwrap() error { return e.cause }
func (e *connLostError) Is(target error) bool {
	return target == ErrConnectionLost || target == ErrClosed
}

type timeoutError struct {
	msg     string
	fromCtx bool
}

func (e *timeoutError) Error() string { return "madsidecar: call timed out: " + e.msg }
func (e *timeoutError) Timeout() bool { return true }
func (e *timeoutError) Is(target error) bool {
	return target == ErrTimeout || (e.fromCtx && target == context.DeadlineExceeded)
}
