package reward

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
)

// After a call, the source and the responses it carried are nowhere in the memory of the
// worker's processes: not in the zygote, and so not in the spare forked for the next call,
// which a later function would run in. Read from outside, through /proc/PID/mem, the way no
// function can (workers are not dumpable): a scan from inside a function would find its own
// freed temporaries, or lose the evidence to its own allocations, so only this view is exact.
func TestNoRequestDataStaysInTheWorker(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("reading a worker's memory needs root (CAP_SYS_PTRACE over the sandbox's user namespace); make test runs it as root")
	}
	for _, hookOn := range []bool{true, false} {
		t.Run(fmt.Sprintf("audit_hook_%v", hookOn), func(t *testing.T) {
			p := newTestPool(t, Options{Workers: 1, noAuditHook: !hookOn})
			ctx := context.Background()
			token := func() string {
				b := make([]byte, 12)
				rand.Read(b)
				return hex.EncodeToString(b)
			}
			srcMark, respMark := "src"+token(), "resp"+token()
			// The marks travel in the source and the responses (several, so the set is held by
			// the zygote between calls); the function writes one to /tmp, prints it, and sends
			// one back through the zygote in an error message.
			src := "def evaluate(response):\n    print(response)\n    try:\n        open('/tmp/left', 'w').write(response)\n    except OSError:\n        pass\n" +
				"    if len(response) > 500:\n        raise ValueError(response)\n" +
				"    return response == '" + srcMark + "'\n"
			// A set large enough, and called on often enough, that spares decode it ahead of
			// their calls (worker.py's PRELOAD_BYTES and PRELOAD_STREAK): the spare waiting
			// when the other data comes holds these responses, and must go.
			responses := []string{respMark, respMark + "-2", strings.Repeat(respMark, 50), strings.Repeat("filler ", 6000)}
			for range 4 {
				if _, err := p.Score(ctx, []string{src, src}, responses); err != nil {
					t.Fatal(err)
				}
			}
			// A call on other data: the calls that saw the marks are over, their processes gone.
			if _, err := p.Score(ctx, []string{"def evaluate(response):\n    return True\n"}, []string{"other"}); err != nil {
				t.Fatal(err)
			}
			procs := descendants(os.Getpid())
			if len(procs) == 0 {
				t.Fatal("found no worker processes under this test")
			}
			scanned := 0
			for _, pid := range procs {
				n, hits, err := grepMemory(pid, [][]byte{[]byte(srcMark), []byte(respMark)})
				if err != nil {
					continue // a process that ended meanwhile
				}
				scanned += n
				for _, h := range hits {
					t.Errorf("pid %d holds another call's data: %s", pid, h)
				}
			}
			if scanned == 0 {
				t.Fatal("read no worker memory")
			}
			t.Logf("%d processes, %d MB read", len(procs), scanned>>20)
		})
	}
}

// descendants lists every process below pid, through /proc/PID/task/TID/children.
func descendants(pid int) []int {
	var out []int
	queue := []int{pid}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", p))
		for _, task := range tasks {
			b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", p, task.Name()))
			for _, f := range strings.Fields(string(b)) {
				if c, err := strconv.Atoi(f); err == nil {
					out = append(out, c)
					queue = append(queue, c)
				}
			}
		}
	}
	return out
}

// grepMemory reads every readable mapping of pid and reports where the needles occur.
func grepMemory(pid int, needles [][]byte) (int, []string, error) {
	maps, err := os.Open(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		return 0, nil, err
	}
	defer maps.Close()
	mem, err := os.Open(fmt.Sprintf("/proc/%d/mem", pid))
	if err != nil {
		return 0, nil, err
	}
	defer mem.Close()
	read := 0
	var hits []string
	sc := bufio.NewScanner(maps)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 || f[1][0] != 'r' {
			continue
		}
		lo, hi, ok := strings.Cut(f[0], "-")
		if !ok {
			continue
		}
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil || end-start > 1<<30 {
			continue
		}
		buf := make([]byte, end-start)
		n, _ := mem.ReadAt(buf, int64(start))
		buf = buf[:n]
		read += n
		name := "anonymous"
		if len(f) >= 6 {
			name = f[5]
		}
		for _, needle := range needles {
			if i := bytes.Index(buf, needle); i >= 0 {
				hits = append(hits, fmt.Sprintf("%q in %s at +%#x", needle, name, i))
			}
		}
	}
	return read, hits, sc.Err()
}
