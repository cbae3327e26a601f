package main

import (
	"bytes"
	"context"
	"image/png"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// envScreenshot names a file the browser test also saves its screenshot to, after 20 steps
// (the README's docs/dashboard.png is made this way).
const envScreenshot = "AUTOIF_DASHBOARD_SCREENSHOT"

// chromium finds the browser `make test` installs (scripts/ensure_deps.sh, Debian chromium).
func chromium() string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// The dashboard in a real browser, on a live tinyIF run: the reward curve gains points as
// steps land, the smoothing slider redraws it smoothed, and a sample's full text opens from
// the table.
func TestDashboardInABrowserFollowsALiveRun(t *testing.T) {
	if testing.Short() {
		t.Skip("trains a model, starts Python reward workers and a browser")
	}
	browser := chromium()
	if browser == "" {
		t.Skip("no chromium on PATH (Debian package chromium; `make test` installs it)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	runCtx, stopRun := context.WithCancel(ctx)
	defer stopRun()
	// More steps than the test needs: it stops the run once it has seen what it looks for.
	url, out, done := startWatchedRun(t, runCtx, "400", "--samples-per-step", "4")

	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(browser), chromedp.WindowSize(1400, 1100))
	if os.Geteuid() == 0 {
		opts = append(opts, chromedp.NoSandbox) // Chromium refuses to sandbox itself as root
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	defer cancelAlloc()
	bctx, cancelBrowser := chromedp.NewContext(actx)
	defer cancelBrowser()
	if err := chromedp.Do(bctx, chromedp.Navigate(url), chromedp.WaitVisible(chromedp.CSS("#chart-reward"))); err != nil {
		t.Fatalf("open %s: %v", url, err)
	}
	eval := func(js string) string {
		t.Helper()
		v, err := chromedp.Run(bctx, chromedp.Evaluate[string](js))
		if err != nil {
			t.Fatalf("%s: %v", js, err)
		}
		return v
	}
	points := func() int {
		n, _ := strconv.Atoi(eval(`document.querySelector("#chart-reward").dataset.points || "0"`))
		return n
	}
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		deadline := time.Now().Add(45 * time.Second)
		for !ok() {
			if time.Now().After(deadline) {
				t.Fatalf("waited 45s for %s\nrun output:\n%s", what, out.String())
			}
			select {
			case err := <-done:
				t.Fatalf("the run ended (%v) before the page showed %s\n%s", err, what, out.String())
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
	var first int
	waitFor("a first reward point", func() bool { first = points(); return first > 0 })
	waitFor("the reward curve to gain points as steps land", func() bool { return points() > first+1 })
	shotPath := os.Getenv(envScreenshot)
	if shotPath != "" {
		// For the README: enough steps for the curves to show a trend.
		waitFor("20 steps for the screenshot", func() bool { return points() >= 20 })
	}
	if eval(`String(!!document.querySelector("#chart-reward canvas"))`) != "true" {
		t.Fatal("the reward chart has points but no canvas: uPlot did not draw")
	}

	eval(`(() => { const s = document.getElementById("smoothing"); s.value = "0.9"; s.dispatchEvent(new Event("input")); return ""; })()`)
	if got := eval(`document.querySelector("#chart-reward").dataset.smoothing`); got != "0.9" {
		t.Fatalf("reward chart smoothing %q after moving the slider to 0.9", got)
	}
	// The drawn line is the debiased EMA of the recorded one: with rewards that vary, its
	// last value is not the raw last value.
	waitFor("a smoothed reward curve that differs from the raw one", func() bool {
		return eval(`(() => { const d = document.querySelector("#chart-reward").dataset; return String(d.last !== d.rawLast); })()`) == "true"
	})

	waitFor("a sample in the table", func() bool {
		return eval(`String(document.querySelectorAll("#samples tbody tr").length)`) != "0"
	})
	shot, err := chromedp.Run(bctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := png.Decode(bytes.NewReader(shot)); err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	if shotPath != "" {
		if err := os.WriteFile(shotPath, shot, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// The table re-renders as samples arrive, so the row found can be gone by the click
	// ("Could not find node with given id"): click the newest first row again.
	var clickErr error
	for range 5 {
		cctx, cancel := context.WithTimeout(bctx, 10*time.Second)
		clickErr = chromedp.Do(cctx, chromedp.Click(chromedp.CSS("#samples tbody tr")), chromedp.WaitVisible(chromedp.CSS("#modal.open")))
		cancel()
		if clickErr == nil {
			break
		}
	}
	if clickErr != nil {
		t.Fatalf("open a sample: %v", clickErr)
	}
	if got := eval(`String(document.querySelectorAll("#sample-detail pre.response").length)`); got != "4" {
		t.Errorf("the sample shows %s responses, want the run's k=4", got)
	}
	if eval(`String(document.querySelector("#sample-detail").textContent.includes("Prompt"))`) != "true" {
		t.Error("the sample does not show its prompt")
	}
	stopRun()
	<-done
}
