package rollout

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/autoif/autoif/model"
	"github.com/autoif/autoif/natsbus"
	"github.com/autoif/autoif/proto"
	"github.com/autoif/autoif/tokenizer"
)

// Policy is one loaded policy version: the weights ready for sampling and their tokenizer.
type Policy struct {
	Version int64
	// Dir is the checkpoint directory it was loaded from.
	Dir   string
	Model *model.Model
	Tok   *tokenizer.Tokenizer
	// Published is when the run's policy key moved to this version; zero for a policy loaded
	// from a local directory.
	Published time.Time
	// cached: Dir lies in the worker's cache and may be removed once the policy is retired.
	cached bool
}

// LoadPolicy loads a checkpoint directory as the given version. A checkpoint without
// tokenizer files uses fallback's tokenizer (a trainer may publish weights only); with no
// fallback either, it is an error.
func LoadPolicy(dir string, version int64, threads int, fallback *tokenizer.Tokenizer) (*Policy, error) {
	// The sampler keeps a BF16/F16 checkpoint's weights as stored (half the bytes per decode
	// step); the trainer's published versions are float32 and load as such.
	m, err := model.LoadModel(dir, model.LoadOptions{})
	if err != nil {
		return nil, fmt.Errorf("policy v%d: %w", version, err)
	}
	tok := fallback
	if _, err := os.Stat(filepath.Join(dir, "tokenizer.json")); err == nil || fallback == nil {
		if tok, err = tokenizer.Load(dir); err != nil {
			return nil, fmt.Errorf("policy v%d: tokenizer: %w", version, err)
		}
	}
	if tok.VocabSize() > m.Config.VocabSize {
		return nil, fmt.Errorf("policy v%d: tokenizer has %d tokens, the model only %d embeddings", version, tok.VocabSize(), m.Config.VocabSize)
	}
	m.Threads = threads
	return &Policy{Version: version, Dir: dir, Model: m, Tok: tok}, nil
}

// LoadAdapterPolicy loads a LoRA adapter directory (PEFT format, what a LoRA trainer
// publishes) as the given version, run over base's weights: the base model is shared, not
// loaded again, so a swap moves megabytes. The tokenizer is the adapter directory's own when
// it has one, else base's.
func LoadAdapterPolicy(dir string, version int64, base *Policy) (*Policy, error) {
	a, err := model.LoadAdapter(dir)
	if err != nil {
		return nil, fmt.Errorf("policy v%d: %w", version, err)
	}
	m, err := base.Model.WithAdapter(a)
	if err != nil {
		return nil, fmt.Errorf("policy v%d: adapter does not fit the base model %s: %w", version, base.Dir, err)
	}
	tok := base.Tok
	if _, err := os.Stat(filepath.Join(dir, "tokenizer.json")); err == nil {
		if tok, err = tokenizer.Load(dir); err != nil {
			return nil, fmt.Errorf("policy v%d: tokenizer: %w", version, err)
		}
	}
	return &Policy{Version: version, Dir: dir, Model: m, Tok: tok}, nil
}

// IsAdapter reports whether the policy runs a LoRA adapter over a shared base.
func (p *Policy) IsAdapter() bool { return p.Model.Adapter() != nil }

// stopTokens are the ids that end a response: the tokenizer's and the model config's.
func (p *Policy) stopTokens() []int {
	seen := map[int]bool{}
	var out []int
	for _, id := range append(p.Tok.EOSIDs(), p.Model.Config.EOSTokenIDs...) {
		if !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	return out
}

// encodePrompt turns a prompt unit's text into the token ids the policy conditions on, and
// the text those ids spell (the chat-rendered prompt when chat is set).
func (p *Policy) encodePrompt(prompt string, chat bool) ([]int, string, error) {
	ids, text, err := p.Tok.RenderPrompt(prompt, chat)
	if err != nil {
		return nil, "", fmt.Errorf("policy v%d: %w (turn chat off for a model without a template)", p.Version, err)
	}
	return ids, text, nil
}

// CheckpointDir is where version v of a run's policy is cached under cacheDir.
func CheckpointDir(cacheDir string, version int64) string {
	return filepath.Join(cacheDir, fmt.Sprintf("v%08d", version))
}

// FetchCheckpoint downloads every file of policy version v from the run's checkpoint store
// into CheckpointDir(cacheDir, v) and returns that directory. The files land in a temporary
// sibling first, renamed into place when all are there, so a directory that exists is whole
// and is reused without downloading again.
func FetchCheckpoint(ctx context.Context, store jetstream.ObjectStore, run proto.Run, version int64, cacheDir string) (string, error) {
	dst := CheckpointDir(cacheDir, version)
	if complete(dst) {
		return dst, nil
	}
	prefix := run.CheckpointObject(version, "")
	// Each request is bounded and retried: one whose reply a cluster's failover lost would
	// otherwise hold the worker for good.
	var infos []*jetstream.ObjectInfo
	err := natsbus.Retry(ctx, natsbus.RetryOptions{Attempt: 30 * time.Second}, func(ctx context.Context) (err error) {
		infos, err = store.List(ctx)
		return err
	})
	if err != nil && !errors.Is(err, jetstream.ErrNoObjectsFound) {
		return "", fmt.Errorf("fetch policy v%d: list %s: %w", version, run.CheckpointBucket(), err)
	}
	var names []string
	sizes := map[string]uint64{}
	for _, info := range infos {
		if strings.HasPrefix(info.Name, prefix) && !info.Deleted {
			names = append(names, info.Name)
			sizes[info.Name] = info.Size
		}
	}
	if len(names) == 0 {
		return "", fmt.Errorf("fetch policy v%d: no objects under %s in %s", version, prefix, run.CheckpointBucket())
	}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return "", fmt.Errorf("fetch policy v%d: %w", version, err)
	}
	tmp, err := os.MkdirTemp(cacheDir, "."+filepath.Base(dst)+".tmp-")
	if err != nil {
		return "", fmt.Errorf("fetch policy v%d: %w", version, err)
	}
	defer os.RemoveAll(tmp) // a no-op once renamed
	for _, name := range names {
		rel := strings.TrimPrefix(name, prefix)
		// Object names come from the bus: never let one escape the checkpoint directory.
		if clean := path.Clean(rel); clean != rel || !fs.ValidPath(rel) {
			return "", fmt.Errorf("fetch policy v%d: object %q is not a plain relative file name", version, name)
		}
		file := filepath.Join(tmp, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
			return "", fmt.Errorf("fetch policy v%d: %w", version, err)
		}
		// A get whose member died stalls rather than fails: bound an attempt by what the
		// object's size needs at a slow 8 MB/s.
		attempt := 10*time.Second + time.Duration(sizes[name]/(8<<20))*time.Second
		err := natsbus.Retry(ctx, natsbus.RetryOptions{Attempt: attempt, For: 10 * attempt}, func(ctx context.Context) error {
			return store.GetFile(ctx, name, file)
		})
		if err != nil {
			return "", fmt.Errorf("fetch policy v%d: %s: %w", version, name, err)
		}
	}
	if err := os.Rename(tmp, dst); err != nil {
		// Another worker sharing the cache may have won the race; its copy is as good.
		if complete(dst) {
			return dst, nil
		}
		return "", fmt.Errorf("fetch policy v%d: %w", version, err)
	}
	return dst, nil
}

// complete reports whether a cached version directory is there: a whole checkpoint
// (config.json) or an adapter (adapter_config.json); both arrive by one rename.
func complete(dir string) bool {
	for _, f := range []string{"config.json", model.AdapterConfigFile} {
		if _, err := os.Stat(filepath.Join(dir, f)); err == nil {
			return true
		}
	}
	return false
}
