package proto

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestRewardCodecsRoundTripTheirRows(t *testing.T) {
	unicode := "héllo 世界 🙂 \u0000 \u202e rtl\t\n"
	big := strings.Repeat("ab\u00e9\u4e16", 64*1024/8)
	fn := "def evaluate(response):\n    return response.islower()\n"

	t.Run("requests", func(t *testing.T) {
		cases := map[string][]ScoreRequest{
			"empty batch": {},
			"one request": {{RequestID: "r1", Functions: []string{fn, fn + "#2"}, Responses: []string{"a", "B", ""}, Timeout: 1500 * time.Millisecond}},
			"no timeout":  {{RequestID: "r2", Functions: []string{fn}, Responses: []string{"x"}}},
			"unicode and 64 KB strings": {{
				RequestID: unicode, Functions: []string{big}, Responses: []string{unicode, big}, Timeout: time.Hour,
			}},
			"no functions, no responses": {{RequestID: "r3", Functions: []string{}, Responses: []string{}}},
			"several requests":           {{RequestID: "a", Functions: []string{fn}, Responses: []string{"x"}}, {RequestID: "b", Functions: []string{}, Responses: []string{"y", "z"}}},
		}
		for name, rows := range cases {
			t.Run(name, func(t *testing.T) { assertRoundTrip(t, ScoreRequests, rows) })
		}
	})
	t.Run("replies", func(t *testing.T) {
		cases := map[string][]ScoreReply{
			"empty batch": {},
			"scored": {{
				RequestID: "r1", Server: "S1", Functions: 2,
				Scores: []float64{1, 0.5, 0}, Passed: []int32{2, 1, 0}, Ran: []int32{2, 2, 0}, Errors: []int32{0, 0, 2}, Timeouts: []int32{0, 0, 1},
				Outcomes: []int32{OutcomePass, OutcomePass, OutcomeError, OutcomePass, OutcomeFail, OutcomeTimeout},
				Kinds:    []string{"", "", "exception", "", "", ""},
				Messages: []string{"", "", unicode, "", "", "deadline 2s"},
				Elapsed:  1234 * time.Microsecond,
			}},
			"failed request": {{RequestID: "r2", Error: "pool closed", Server: "S2", Scores: []float64{}, Passed: []int32{}, Ran: []int32{}, Errors: []int32{}, Timeouts: []int32{}, Outcomes: []int32{}, Kinds: []string{}, Messages: []string{}}},
		}
		for name, rows := range cases {
			t.Run(name, func(t *testing.T) { assertRoundTrip(t, ScoreReplies, normaliseReplies(rows)) })
		}
	})
}

// normaliseReplies gives empty lists the form decoding gives them, so DeepEqual compares
// values rather than nil-versus-empty.
func normaliseReplies(rows []ScoreReply) []ScoreReply {
	payload, err := ScoreReplies.Encode(rows)
	if err != nil {
		panic(err)
	}
	back, err := ScoreReplies.Decode(payload)
	if err != nil {
		panic(err)
	}
	for i := range back {
		if !reflect.DeepEqual(emptyToNil(back[i]), emptyToNil(rows[i])) {
			panic("reply changed in a round trip: " + rows[i].RequestID)
		}
	}
	return back
}

func emptyToNil(r ScoreReply) ScoreReply {
	if len(r.Scores) == 0 {
		r.Scores = nil
	}
	for _, p := range []*[]int32{&r.Passed, &r.Ran, &r.Errors, &r.Timeouts, &r.Outcomes} {
		if len(*p) == 0 {
			*p = nil
		}
	}
	for _, p := range []*[]string{&r.Kinds, &r.Messages} {
		if len(*p) == 0 {
			*p = nil
		}
	}
	return r
}

func TestRewardCodecsRejectEachOthersPayloads(t *testing.T) {
	req, err := ScoreRequests.Msg(RewardService, "", []ScoreRequest{{RequestID: "r", Functions: []string{"f"}, Responses: []string{"x"}}})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := ScoreReplies.Msg("_INBOX.x", "", []ScoreReply{{RequestID: "r", Functions: 1, Scores: []float64{1}}})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		err  func() error
		want string
	}{
		{"reply payload under a request header", func() error {
			_, err := ScoreRequests.DecodeMsg(req.Header, rep.Data)
			return err
		}, "checksum"},
		{"reply message to the request decoder", func() error {
			_, err := ScoreRequests.DecodeMsg(rep.Header, rep.Data)
			return err
		}, `"score-replies/v1"`},
		{"reply payload to the request decoder", func() error {
			_, err := ScoreRequests.Decode(rep.Data)
			return err
		}, `payload schema is "score-replies/v1"`},
		{"request payload to the reply decoder", func() error {
			_, err := ScoreReplies.Decode(req.Data)
			return err
		}, `payload schema is "score-requests/v1"`},
		{"truncated request", func() error {
			_, err := ScoreRequests.Decode(req.Data[:len(req.Data)/2])
			return err
		}, "decode score-requests/v1"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.err(); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestScoreReplyCheckCatchesMisshapenReplies(t *testing.T) {
	good := func() ScoreReply {
		return ScoreReply{
			RequestID: "r", Functions: 2,
			Scores: []float64{1, 0}, Passed: []int32{2, 0}, Ran: []int32{2, 2}, Errors: []int32{0, 0}, Timeouts: []int32{0, 0},
			Outcomes: []int32{1, 0, 1, 0}, Kinds: []string{"", "", "", ""}, Messages: []string{"", "", "", ""},
		}
	}
	cases := []struct {
		name   string
		edit   func(*ScoreReply)
		f, r   int
		wantOK bool
	}{
		{"well formed", func(*ScoreReply) {}, 2, 2, true},
		{"failed request needs no columns", func(r *ScoreReply) { *r = ScoreReply{RequestID: "r", Error: "boom"} }, 2, 2, true},
		{"wrong function count", func(*ScoreReply) {}, 3, 2, false},
		{"short scores", func(r *ScoreReply) { r.Scores = r.Scores[:1] }, 2, 2, false},
		{"short timeouts", func(r *ScoreReply) { r.Timeouts = nil }, 2, 2, false},
		{"short matrix", func(r *ScoreReply) { r.Outcomes = r.Outcomes[:3] }, 2, 2, false},
		{"short messages", func(r *ScoreReply) { r.Messages = r.Messages[:3] }, 2, 2, false},
		{"unknown outcome code", func(r *ScoreReply) { r.Outcomes[2] = 9 }, 2, 2, false},
		{"negative outcome code", func(r *ScoreReply) { r.Outcomes[0] = -1 }, 2, 2, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := good()
			tc.edit(&r)
			if err := r.Check(tc.f, tc.r); (err == nil) != tc.wantOK {
				t.Fatalf("Check(%d, %d) = %v, want ok=%v", tc.f, tc.r, err, tc.wantOK)
			}
		})
	}
}
