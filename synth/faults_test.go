package synth

import (
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Faults real servers produce, injected in front of the replay: a server error on every try,
// a 429 with Retry-After, a hung request (timeout), a connection cut mid-reply, a reply that
// is not JSON and then a completion with no code block. The stage finishes, the transient
// faults are retried away, and the two that cannot be are counted in the funnel.
func TestFunctionsStageSurvivesFaults(t *testing.T) {
	srv := newReplay(t)
	recorded, err := ReadJSONL[FunctionsRow]("testdata/autoif/eval_func_rft.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	var instr []InstructionRow
	for _, r := range recorded {
		instr = append(instr, InstructionRow{r.Instruction})
	}
	is := func(prompt string, i int) bool { return strings.Contains(prompt, recorded[i].Instruction) }
	srv.SetFault(func(prompt string, attempt int, w http.ResponseWriter) bool {
		switch {
		case is(prompt, 0):
			w.WriteHeader(http.StatusInternalServerError)
		case is(prompt, 1) && attempt == 1:
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusTooManyRequests)
		case is(prompt, 2) && attempt == 1:
			time.Sleep(time.Second) // past the 300 ms timeout
		case is(prompt, 3) && attempt == 1:
			w.Header().Set("Content-Length", "4096")
			w.WriteHeader(http.StatusOK)
			w.Write([]byte(`{"choices": [{"message": {"content": "` + "```json"))
			w.(http.Flusher).Flush()
			if conn, _, err := w.(http.Hijacker).Hijack(); err == nil {
				conn.Close()
			}
		case is(prompt, 4) && attempt == 1:
			w.Write([]byte(`{"choices": [ {"message": `))
		case is(prompt, 4):
			w.Write([]byte(`{"choices": [{"message": {"role": "assistant", "content": "Here is a function: it returns True when the response follows the instruction."}}]}`))
		default:
			return false
		}
		return true
	})
	in := writeRows(t, filepath.Join(t.TempDir(), "instructions.jsonl"), instr)
	start := time.Now()
	_, f := runConfig(t, srv, `
endpoints:
  teacher: {url: REPLAY/v1, model: recorded, retries: 2, timeout: 300ms}
start: functions
input: `+in+`
stop: functions
stages:
  functions: {endpoint: teacher, sampling: {n: 8}}
`)
	fs := f.Stage("functions")
	t.Logf("%s in %s", table(f), time.Since(start).Round(time.Millisecond))
	if fs.In != 5 || fs.Kept != 3 || fs.Dropped[ReasonRequestFailed] != 1 || fs.Dropped[ReasonNoUsable] != 1 || fs.Details[ReasonNoJSON] != 1 {
		t.Errorf("funnel %+v", fs)
	}
	// The funnel says why the request failed: its last answer, a 500.
	if len(fs.Errors) != 1 {
		t.Errorf("request errors %v, want the one failure's", fs.Errors)
	}
	for e := range fs.Errors {
		if !strings.Contains(e, "HTTP 500") {
			t.Errorf("request error %q, want the server's 500", e)
		}
	}
	if fs.Client == nil || fs.Client.Failures != 1 || fs.Client.Retries != 6 || fs.Client.Requests != 4 {
		t.Errorf("client %+v: want 1 failure, 6 retries (2 for the 500s, 1 each for the rest), 4 answered", fs.Client)
	}
	if srv.Attempts(recorded[0].Prompt) != 3 {
		t.Errorf("the failing prompt was tried %d times, want 3", srv.Attempts(recorded[0].Prompt))
	}
	if time.Since(start) < time.Second {
		t.Errorf("the 429's Retry-After (1 s) was not honoured")
	}
}
