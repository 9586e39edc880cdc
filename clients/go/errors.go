package ferry

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	ferryv1 "ferry.dev/clients/go/gen/ferry/v1"
)

// Domain is the ErrorInfo domain of every error Ferry sends.
const Domain = "ferry.dev"

// retriableReasons are the reasons a request may be sent again for.
var retriableReasons = map[string]bool{
	"NOT_LEADER":           true,
	"SHUTTING_DOWN":        true,
	"METADATA_UNAVAILABLE": true,
	"NOT_ENOUGH_REPLICAS":  true,
	"STORAGE_FAILED":       true,
	"THROTTLED":            true,
	"DISK_FULL":            true,
}

// Error is a failed call: the gRPC code, Ferry's stable reason (TOPIC_NOT_FOUND,
// NOT_LEADER, …), what it is about, how long to wait before a retry, and for
// NOT_LEADER where the leader is. Read from the standard google.rpc.Status details.
type Error struct {
	Code          codes.Code
	Message       string
	Reason        string
	Metadata      map[string]string
	RetryAfter    time.Duration
	LeaderAddress string
}

func (e *Error) Error() string {
	name := e.Reason
	if name == "" {
		name = e.Code.String()
	}
	return fmt.Sprintf("%s: %s", name, e.Message)
}

// Retriable says whether sending the request again may succeed.
func (e *Error) Retriable() bool {
	if e.Reason != "" {
		return retriableReasons[e.Reason]
	}
	return e.Code == codes.Unavailable || e.Code == codes.DeadlineExceeded
}

// unreachable says whether the host could not be reached at all (no Ferry reason).
func (e *Error) unreachable() bool {
	return e.Reason == "" && e.Code == codes.Unavailable
}

// FromError decodes a gRPC error, with Ferry's details when the broker sent them.
// Errors that are not gRPC statuses come back as Unknown.
func FromError(err error) *Error {
	var ferryErr *Error
	if errors.As(err, &ferryErr) {
		return ferryErr
	}
	st, ok := status.FromError(err)
	if !ok {
		return &Error{Code: codes.Unknown, Message: err.Error()}
	}
	out := &Error{Code: st.Code(), Message: st.Message(), Metadata: map[string]string{}}
	for _, detail := range st.Details() {
		switch d := detail.(type) {
		case *errdetails.ErrorInfo:
			if d.GetDomain() == Domain {
				out.Reason = d.GetReason()
				for k, v := range d.GetMetadata() {
					out.Metadata[k] = v
				}
			}
		case *errdetails.RetryInfo:
			out.RetryAfter = d.GetRetryDelay().AsDuration()
		case *ferryv1.LeaderHint:
			out.LeaderAddress = d.GetAddress()
		}
	}
	return out
}

// fromDetail decodes the error one partition or message carries inside a reply.
func fromDetail(detail *ferryv1.ErrorDetail) *Error {
	return &Error{
		Code:          codes.Unknown,
		Message:       detail.GetMessage(),
		Reason:        strings.TrimPrefix(detail.GetCode().String(), "ERROR_CODE_"),
		RetryAfter:    time.Duration(detail.GetRetryAfterMs()) * time.Millisecond,
		LeaderAddress: detail.GetLeaderHint().GetAddress(),
	}
}
