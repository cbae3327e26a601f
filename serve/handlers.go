package serve

import (
	"net/http"
	"strconv"
	"time"

	"github.com/autoif/autoif/tokenizer"
)

func (s *Server) handleChat(w http.ResponseWriter, r *http.Request) {
	var req chatRequest
	if e := decodeBody(w, r, &req); e != nil {
		writeError(w, e)
		return
	}
	if e := s.checkModel(req.Model); e != nil {
		writeError(w, e)
		return
	}
	if len(req.Messages) == 0 {
		writeError(w, invalid("messages", "messages must not be empty"))
		return
	}
	maxTokens, param := req.MaxCompletionTokens, "max_completion_tokens"
	if maxTokens == nil {
		maxTokens, param = req.MaxTokens, "max_tokens"
	}
	rq, e := s.parseSampling(req.sampling, maxTokens, param)
	if e != nil {
		writeError(w, e)
		return
	}
	rq.logprobs = req.Logprobs
	if req.TopLogprobs != nil {
		if !req.Logprobs {
			writeError(w, invalid("top_logprobs", "top_logprobs needs logprobs: true"))
			return
		}
		if rq.topN = *req.TopLogprobs; rq.topN < 0 || rq.topN > maxTopLogprobs {
			writeError(w, invalid("top_logprobs", "top_logprobs is %d: want 0 to %d", rq.topN, maxTopLogprobs))
			return
		}
	}
	msgs := make([]tokenizer.Message, len(req.Messages))
	for i, m := range req.Messages {
		msgs[i] = tokenizer.Message{Role: m.Role, Content: string(m.Content)}
	}
	ids, _, err := s.tok.RenderChat(msgs)
	if err != nil {
		writeError(w, invalid("messages", "%v", err))
		return
	}
	rq.prompts = [][]int{ids}
	if e := s.checkPrompts(rq, s.Policy().Model.Config.VocabSize); e != nil {
		writeError(w, e)
		return
	}
	ctx := r.Context()
	p, choices, e := s.start(ctx, rq)
	if e != nil {
		writeError(w, e)
		return
	}
	s.metrics.request("chat", rq)
	base := chatResponse{ID: newID("chatcmpl-"), Created: time.Now().Unix(), Model: s.opts.ModelName, SystemFingerprint: fingerprint(p.Version)}
	if !rq.stream {
		if err := s.follow(ctx, rq, choices, func(update) error { return nil }); err != nil {
			failed(w, ctx, err)
			return
		}
		resp := base
		resp.Object = "chat.completion"
		for _, c := range choices {
			ch := chatChoice{Index: c.index, Message: &chatOut{Role: "assistant", Content: ptr(c.text)}, FinishReason: finishOf(c)}
			if rq.logprobs {
				ch.Logprobs = &chatLogprobs{Content: s.chatLogprobs(c.tokens)}
			}
			resp.Choices = append(resp.Choices, ch)
		}
		resp.Usage = rq.usage(choices)
		s.metrics.completed(resp.Usage)
		w.Header().Set(VersionHeader, strconv.FormatInt(p.Version, 10))
		writeJSON(w, http.StatusOK, resp)
		return
	}
	ev := newSSE(w, p.Version)
	chunk := func(ch chatChoice) chatResponse {
		c := base
		c.Object = "chat.completion.chunk"
		c.Choices = []chatChoice{ch}
		return c
	}
	for _, c := range choices {
		if ev.send(chunk(chatChoice{Index: c.index, Delta: &chatOut{Role: "assistant", Content: ptr("")}})) != nil {
			return
		}
	}
	err = s.follow(ctx, rq, choices, func(u update) error {
		if u.text == "" && len(u.tokens) == 0 && u.c.finish == "" {
			return nil
		}
		ch := chatChoice{Index: u.c.index, Delta: &chatOut{}, FinishReason: finishOf(u.c)}
		if u.text != "" {
			ch.Delta.Content = ptr(u.text)
		}
		if rq.logprobs {
			ch.Logprobs = &chatLogprobs{Content: s.chatLogprobs(u.tokens)}
		}
		return ev.send(chunk(ch))
	})
	if err != nil {
		if ctx.Err() == nil {
			streamError(ev, err)
		}
		return
	}
	u := rq.usage(choices)
	s.metrics.completed(u)
	if rq.includeUsage {
		last := base
		last.Object = "chat.completion.chunk"
		last.Choices = []chatChoice{}
		last.Usage = u
		_ = ev.send(last)
	}
	ev.done()
}

func (s *Server) chatLogprobs(toks []outToken) []chatTokenLogprob {
	out := make([]chatTokenLogprob, len(toks))
	for i, t := range toks {
		text := s.tokenText(t.Token)
		out[i] = chatTokenLogprob{Token: text, Logprob: t.LogProb, Bytes: tokenBytes(text), TopLogprobs: []chatTopLogprob{}}
		for _, alt := range t.Top {
			at := s.tokenText(alt.Token)
			out[i].TopLogprobs = append(out[i].TopLogprobs, chatTopLogprob{Token: at, Logprob: alt.LogProb, Bytes: tokenBytes(at)})
		}
	}
	return out
}

func (s *Server) handleCompletions(w http.ResponseWriter, r *http.Request) {
	var req completionRequest
	if e := decodeBody(w, r, &req); e != nil {
		writeError(w, e)
		return
	}
	if e := s.checkModel(req.Model); e != nil {
		writeError(w, e)
		return
	}
	rq, e := s.parseSampling(req.sampling, req.MaxTokens, "max_tokens")
	if e != nil {
		writeError(w, e)
		return
	}
	if req.MaxTokens == nil {
		rq.maxTokens = ptr(16) // the legacy API's default
	}
	if req.Logprobs != nil {
		if rq.topN = *req.Logprobs; rq.topN < 0 || rq.topN > maxTopLogprobs {
			writeError(w, invalid("logprobs", "logprobs is %d: want 0 to %d", rq.topN, maxTopLogprobs))
			return
		}
		rq.logprobs = true
	}
	texts, ids, err := parsePrompts(req.Prompt)
	if err != nil {
		writeError(w, invalid("prompt", "%v", err))
		return
	}
	for _, t := range texts {
		p, _, err := s.tok.RenderPrompt(t, false)
		if err != nil {
			writeError(w, invalid("prompt", "%v", err))
			return
		}
		ids = append(ids, p)
	}
	rq.prompts = ids
	if e := s.checkPrompts(rq, s.Policy().Model.Config.VocabSize); e != nil {
		writeError(w, e)
		return
	}
	ctx := r.Context()
	p, choices, e := s.start(ctx, rq)
	if e != nil {
		writeError(w, e)
		return
	}
	s.metrics.request("completions", rq)
	// echo: the prompt's text (and, with logprobs, its tokens) ahead of each completion.
	echo := make([]string, len(choices))
	echoLP := make([]*completionLogprobs, len(choices))
	if req.Echo {
		for i, c := range choices {
			prompt := rq.prompts[c.index/rq.n]
			echo[i] = s.decodeText(prompt)
			if rq.logprobs {
				lps, err := p.Model.LogProbs(prompt[:1], prompt[1:])
				if err != nil {
					failed(w, ctx, err)
					return
				}
				echoLP[i] = s.promptLogprobs(prompt, lps)
			}
		}
	}
	base := completionResponse{ID: newID("cmpl-"), Object: "text_completion", Created: time.Now().Unix(), Model: s.opts.ModelName, SystemFingerprint: fingerprint(p.Version)}
	if !rq.stream {
		if err := s.follow(ctx, rq, choices, func(update) error { return nil }); err != nil {
			failed(w, ctx, err)
			return
		}
		resp := base
		for i, c := range choices {
			ch := completionChoice{Index: c.index, Text: echo[i] + c.text, FinishReason: finishOf(c)}
			if rq.logprobs {
				ch.Logprobs = s.legacyLogprobs(echoLP[i], c.tokens, len(echo[i]), rq.topN)
			}
			resp.Choices = append(resp.Choices, ch)
		}
		resp.Usage = rq.usage(choices)
		s.metrics.completed(resp.Usage)
		w.Header().Set(VersionHeader, strconv.FormatInt(p.Version, 10))
		writeJSON(w, http.StatusOK, resp)
		return
	}
	ev := newSSE(w, p.Version)
	chunk := func(ch completionChoice) completionResponse {
		c := base
		c.Choices = []completionChoice{ch}
		return c
	}
	if req.Echo {
		for i, c := range choices {
			ch := completionChoice{Index: c.index, Text: echo[i]}
			if rq.logprobs {
				ch.Logprobs = echoLP[i]
			}
			if ev.send(chunk(ch)) != nil {
				return
			}
		}
	}
	pos := map[int]int{} // index -> position in choices
	for i, c := range choices {
		pos[c.index] = i
	}
	err = s.follow(ctx, rq, choices, func(u update) error {
		if u.text == "" && len(u.tokens) == 0 && u.c.finish == "" {
			return nil
		}
		ch := completionChoice{Index: u.c.index, Text: u.text, FinishReason: finishOf(u.c)}
		if rq.logprobs {
			ch.Logprobs = s.legacyLogprobs(nil, u.tokens, len(echo[pos[u.c.index]]), rq.topN)
		}
		return ev.send(chunk(ch))
	})
	if err != nil {
		if ctx.Err() == nil {
			streamError(ev, err)
		}
		return
	}
	u := rq.usage(choices)
	s.metrics.completed(u)
	if rq.includeUsage {
		last := base
		last.Choices = []completionChoice{}
		last.Usage = u
		_ = ev.send(last)
	}
	ev.done()
}

// promptLogprobs is the echoed prompt in legacy logprobs form: the first token has no
// log-prob (nothing predicts it), the others theirs under the policy.
func (s *Server) promptLogprobs(prompt []int, lps []float32) *completionLogprobs {
	out := &completionLogprobs{}
	off := 0
	for i, id := range prompt {
		text := s.tokenText(id)
		out.Tokens = append(out.Tokens, text)
		if i == 0 {
			out.TokenLogprobs = append(out.TokenLogprobs, nil)
		} else {
			out.TokenLogprobs = append(out.TokenLogprobs, ptr(lps[i-1]))
		}
		out.TopLogprobs = append(out.TopLogprobs, nil)
		out.TextOffset = append(out.TextOffset, off)
		off += len(text)
	}
	return out
}

// legacyLogprobs appends completion tokens to the legacy logprobs object (a new one when
// head is nil); offsets count from the start of the choice's text, echo included.
func (s *Server) legacyLogprobs(head *completionLogprobs, toks []outToken, echoLen, topN int) *completionLogprobs {
	out := &completionLogprobs{Tokens: []string{}, TokenLogprobs: []*float32{}, TopLogprobs: []map[string]float32{}, TextOffset: []int{}}
	if head != nil {
		out.Tokens = append(out.Tokens, head.Tokens...)
		out.TokenLogprobs = append(out.TokenLogprobs, head.TokenLogprobs...)
		out.TopLogprobs = append(out.TopLogprobs, head.TopLogprobs...)
		out.TextOffset = append(out.TextOffset, head.TextOffset...)
	}
	for _, t := range toks {
		out.Tokens = append(out.Tokens, s.tokenText(t.Token))
		out.TokenLogprobs = append(out.TokenLogprobs, ptr(t.LogProb))
		var top map[string]float32
		if topN > 0 {
			top = map[string]float32{}
			for _, alt := range t.Top {
				if _, dup := top[s.tokenText(alt.Token)]; !dup {
					top[s.tokenText(alt.Token)] = alt.LogProb
				}
			}
		}
		out.TopLogprobs = append(out.TopLogprobs, top)
		out.TextOffset = append(out.TextOffset, echoLen+t.offset)
	}
	return out
}
