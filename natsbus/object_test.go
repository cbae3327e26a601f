package natsbus

import (
	"bytes"
	"context"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// A put reads no further ahead of what the server has stored than its bound, and the object
// comes back whole.
func TestPutObjectStaysWithinItsBound(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	bus, err := Connect(ctx, Options{StoreDir: t.TempDir(), Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer bus.Close()
	store, err := bus.JS.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: "paced"})
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 96<<20)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i+8 <= len(data); i += 8 {
		v := rng.Uint64()
		for j := range 8 {
			data[i+j] = byte(v >> (8 * j))
		}
	}
	const ahead = 4 << 20
	// Twice under one name: the second put starts from a bucket that holds the first.
	for round := range 2 {
		info, most, err := putObject(ctx, store, jetstream.ObjectMeta{Name: "model.safetensors"}, bytes.NewReader(data), ahead)
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		if info.Size != uint64(len(data)) {
			t.Fatalf("round %d: stored %d bytes, want %d", round, info.Size, len(data))
		}
		if most > ahead {
			t.Errorf("round %d: read %d bytes ahead of the server, bound %d", round, most, ahead)
		}
		t.Logf("round %d: at most %.1f MB ahead", round, float64(most)/(1<<20))
	}
	got, err := store.GetBytes(ctx, "model.safetensors")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatal("the object read back differs from what was put")
	}
}
