package proto

import (
	"fmt"
	"time"

	"github.com/nats-io/nats.go/micro"
)

// The reward service contract.
//
// A client publishes one ScoreRequest row (codec ScoreRequests) to RewardService with a reply
// subject; one server of the RewardQueueGroup takes it. The server then publishes to that reply
// subject:
//
//   - at once, and every heartbeat interval while the request is queued or running, an empty
//     message with HeaderRewardStatus set to RewardStatusWorking, so a client can tell a server
//     that is still working from one that died (a killed server's replies never come, and NATS
//     does not tell the requester);
//   - finally, one ScoreReply row (codec ScoreReplies). A request that failed as a whole carries
//     ScoreReply.Error, and the message carries the NATS micro error headers
//     (HeaderServiceError, HeaderServiceErrorCode) with one of the RewardCode* codes.
//
// A payload that cannot be decoded at all (wrong schema header, bad checksum, not Arrow) gets a
// reply of the error headers alone, with no payload: there is no request id to echo.
//
// Scoring is deterministic, so a request may be sent again (to any server) with the same
// RequestID; the first reply wins.

// RewardServiceName is the reward service's name in NATS micro discovery ($SRV.PING, $SRV.INFO
// and $SRV.STATS followed by this name).
const RewardServiceName = "autoif-reward"

// RewardServiceVersion is the micro service version: the major number changes with the
// request or reply schema.
const RewardServiceVersion = "1.0.0"

// HeaderRewardStatus marks a progress message on a reward request's reply subject; the final
// reply has no such header.
const HeaderRewardStatus = "Autoif-Status"

// RewardStatusWorking says the server holds the request (queued or scoring) and is alive.
const RewardStatusWorking = "working"

// NATS micro's error headers, which the final reply of a failed request carries.
const (
	HeaderServiceError     = micro.ErrorHeader
	HeaderServiceErrorCode = micro.ErrorCodeHeader
)

// Error codes of a failed reward request.
const (
	// RewardCodeBadRequest: the request is malformed; sending it again cannot help.
	RewardCodeBadRequest = "400"
	// RewardCodeInternal: the server failed while scoring (its sandbox is broken); another
	// server may succeed.
	RewardCodeInternal = "500"
	// RewardCodeUnavailable: the server is overloaded or shutting down and did not start the
	// request; send it again.
	RewardCodeUnavailable = "503"
	// RewardCodeTimeout: the request ran past its timeout on the server.
	RewardCodeTimeout = "504"
)

// Outcome codes of ScoreReply.Outcomes, the same numbers as reward.Outcome.
const (
	OutcomeFail    int32 = 0
	OutcomePass    int32 = 1
	OutcomeError   int32 = 2
	OutcomeTimeout int32 = 3
	OutcomeSkipped int32 = 4 // a result the server's return policy does not count
)

// ScoreRequest asks for every function to be run on every response. A message carries exactly
// one.
type ScoreRequest struct {
	// RequestID identifies the request across retries; the reply echoes it.
	RequestID string
	// Functions are the instruction's verification function sources, each defining
	// `evaluate(response) -> bool`.
	Functions []string
	Responses []string
	// Timeout is how long the client waits for this attempt; the server gives up scoring that
	// long after it received the request (nobody is listening after that). Zero: the server's
	// default. Carried in milliseconds.
	Timeout time.Duration
}

// ScoreReply is a server's answer to one ScoreRequest. With F functions and R responses the
// per-response columns hold R values and the matrix columns F×R values, row-major by function:
// function f on response r is at index f*R + r.
type ScoreReply struct {
	RequestID string
	// Error is non-empty when the request failed as a whole; every other column is then empty.
	Error string
	// Server is the micro service id of the server that scored the request.
	Server string
	// Functions is F, so that an empty matrix (R = 0) still says how many functions ran.
	Functions int32
	// Per response: the mean pass rate over functions that ran, and the counts behind it.
	Scores   []float64
	Passed   []int32
	Ran      []int32
	Errors   []int32 // functions without a verdict, timeouts included
	Timeouts []int32
	// Per function × response: an Outcome* code, the error kind ("" unless an error), and the
	// error message.
	Outcomes []int32
	Kinds    []string
	Messages []string
	// Elapsed is how long the server spent scoring (queueing excluded). Carried in microseconds.
	Elapsed time.Duration
}

// ScoreRequests is the codec of reward requests: one row per request.
var ScoreRequests = newCodec("score-requests/v1",
	stringCol("request_id", func(r *ScoreRequest) string { return r.RequestID }, func(r *ScoreRequest, v string) { r.RequestID = v }),
	stringListCol("functions", func(r *ScoreRequest) []string { return r.Functions }, func(r *ScoreRequest, v []string) { r.Functions = v }),
	stringListCol("responses", func(r *ScoreRequest) []string { return r.Responses }, func(r *ScoreRequest, v []string) { r.Responses = v }),
	int64Col("timeout_ms", func(r *ScoreRequest) int64 { return r.Timeout.Milliseconds() }, func(r *ScoreRequest, v int64) { r.Timeout = time.Duration(v) * time.Millisecond }),
)

// ScoreReplies is the codec of reward replies: one row per request.
var ScoreReplies = newCodec("score-replies/v1",
	stringCol("request_id", func(r *ScoreReply) string { return r.RequestID }, func(r *ScoreReply, v string) { r.RequestID = v }),
	stringCol("error", func(r *ScoreReply) string { return r.Error }, func(r *ScoreReply, v string) { r.Error = v }),
	stringCol("server", func(r *ScoreReply) string { return r.Server }, func(r *ScoreReply, v string) { r.Server = v }),
	int32Col("functions", func(r *ScoreReply) int32 { return r.Functions }, func(r *ScoreReply, v int32) { r.Functions = v }),
	float64ListCol("scores", func(r *ScoreReply) []float64 { return r.Scores }, func(r *ScoreReply, v []float64) { r.Scores = v }),
	int32ListCol("passed", func(r *ScoreReply) []int32 { return r.Passed }, func(r *ScoreReply, v []int32) { r.Passed = v }),
	int32ListCol("ran", func(r *ScoreReply) []int32 { return r.Ran }, func(r *ScoreReply, v []int32) { r.Ran = v }),
	int32ListCol("errors", func(r *ScoreReply) []int32 { return r.Errors }, func(r *ScoreReply, v []int32) { r.Errors = v }),
	int32ListCol("timeouts", func(r *ScoreReply) []int32 { return r.Timeouts }, func(r *ScoreReply, v []int32) { r.Timeouts = v }),
	int32ListCol("outcomes", func(r *ScoreReply) []int32 { return r.Outcomes }, func(r *ScoreReply, v []int32) { r.Outcomes = v }),
	stringListCol("kinds", func(r *ScoreReply) []string { return r.Kinds }, func(r *ScoreReply, v []string) { r.Kinds = v }),
	stringListCol("messages", func(r *ScoreReply) []string { return r.Messages }, func(r *ScoreReply, v []string) { r.Messages = v }),
	int64Col("elapsed_us", func(r *ScoreReply) int64 { return r.Elapsed.Microseconds() }, func(r *ScoreReply, v int64) { r.Elapsed = time.Duration(v) * time.Microsecond }),
)

// Check reports whether a decoded reply's columns agree with each other and with the request
// it answers (F functions, R responses), so a consumer can index them without checking again.
func (r *ScoreReply) Check(functions, responses int) error {
	if r.Error != "" {
		return nil
	}
	if int(r.Functions) != functions {
		return fmt.Errorf("reply has %d functions, request has %d", r.Functions, functions)
	}
	for name, n := range map[string]int{"scores": len(r.Scores), "passed": len(r.Passed), "ran": len(r.Ran), "errors": len(r.Errors), "timeouts": len(r.Timeouts)} {
		if n != responses {
			return fmt.Errorf("reply has %d %s for %d responses", n, name, responses)
		}
	}
	cells := functions * responses
	for name, n := range map[string]int{"outcomes": len(r.Outcomes), "kinds": len(r.Kinds), "messages": len(r.Messages)} {
		if n != cells {
			return fmt.Errorf("reply has %d %s for %d functions × %d responses", n, name, functions, responses)
		}
	}
	for i, o := range r.Outcomes {
		if o < OutcomeFail || o > OutcomeSkipped {
			return fmt.Errorf("reply outcome %d at %d is not an outcome code", o, i)
		}
	}
	return nil
}
