package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/autoif/autoif/natsbus"
)

// A plain `autoif nats serve` (no cluster flags) starts a server that clients can use: the
// cluster flags are optional, and an unset --routes is no route.
func TestNatsServeStartsAStandaloneServer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	c := startChild(t, "nats", "nats", "serve", "--port", fmt.Sprint(port), "--store-dir", filepath.Join(t.TempDir(), "js"))
	url := fmt.Sprintf("nats://127.0.0.1:%d", port)
	deadline := time.Now().Add(30 * time.Second)
	for {
		data, _ := os.ReadFile(c.log.Name())
		if strings.Contains(string(data), url) {
			break
		}
		if err := c.exited(0); err == nil || err.Error() != "still running" || time.Now().After(deadline) {
			t.Fatalf("nats serve did not print %s (%v):\n%s", url, err, data)
		}
		time.Sleep(50 * time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	bus, err := natsbus.Connect(ctx, natsbus.Options{URL: url})
	if err != nil {
		t.Fatal(err)
	}
	defer bus.Close()
	if _, err := bus.JS.AccountInfo(ctx); err != nil {
		t.Errorf("JetStream on the served server: %v", err)
	}
}
