package reward

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/autoif/autoif/reward/sandboxtest"
)

// The attack suite (testdata/attacks.json) against one long-lived worker that has already
// scored the benign functions: every attack is contained, the host is unchanged, and the
// benign functions give their own answers after it, including when they run right after the
// attack on the same held responses. With the audit hook off, the filesystem and syscall
// attacks show what the OS layer refuses on its own.
func TestAttackSuite(t *testing.T) {
	attacks := sandboxtest.Load(t)
	host := sandboxtest.NewHost(t)
	for _, hookOn := range []bool{true, false} {
		name := "audit hook on"
		if !hookOn {
			name = "audit hook off"
		}
		t.Run(strings.ReplaceAll(name, " ", "_"), func(t *testing.T) {
			p := newTestPool(t, Options{Workers: 1, Deadline: time.Second, noAuditHook: !hookOn})
			ctx := context.Background()
			checkBenign := func(t *testing.T, res *Result, from int, when string) {
				t.Helper()
				for i, want := range sandboxtest.Want {
					if got := verdicts(res.Evals[from+i]); got != want {
						t.Errorf("%s: benign function %d gave %s, want %s", when, i, got, want)
					}
				}
			}
			res, err := p.Score(ctx, sandboxtest.Benign, sandboxtest.Responses)
			if err != nil {
				t.Fatal(err)
			}
			checkBenign(t, res, 0, "before the attacks")
			for _, a := range attacks {
				if !a.Runs() {
					continue
				}
				t.Run(strings.ReplaceAll(a.Name, " ", "_"), func(t *testing.T) {
					if _, err := p.Evaluate(ctx, host.CanarySrc, []string{host.CanaryResponse}); err != nil {
						t.Fatal(err)
					}
					start := time.Now()
					res, err := p.Score(ctx, append([]string{host.Fill(a.Src)}, sandboxtest.Benign...), sandboxtest.Responses)
					if err != nil {
						t.Fatal(err)
					}
					for i, e := range res.Evals[0] {
						if msg := a.Check(hookOn, e.Outcome.String(), string(e.Kind), e.Message); msg != "" {
							t.Errorf("response %d: %s", i, msg)
						}
					}
					checkBenign(t, res, 1, "right after the attack")
					host.AssertUnchanged(t)
					again, err := p.Score(ctx, sandboxtest.Benign, sandboxtest.Responses)
					if err != nil {
						t.Fatal(err)
					}
					checkBenign(t, again, 0, "on new responses after the attack")
					t.Logf("%s %s %q in %v", res.Evals[0][0].Outcome, res.Evals[0][0].Kind, res.Evals[0][0].Message, time.Since(start).Round(time.Millisecond))
				})
			}
		})
	}
}

func verdicts(evals []Eval) string {
	out := make([]string, len(evals))
	for i, e := range evals {
		out[i] = e.Outcome.String()
	}
	return sandboxtest.Verdicts(out)
}
