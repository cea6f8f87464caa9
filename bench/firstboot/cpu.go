package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The host's CPU while a machine boots: the machines are containers on the host's cores, so
// /proc/stat's first line is their CPU and the host's together (and nothing else runs during a
// benchmark). It tells whether a span of first boot waits (idle cores) or is short of CPU.

// cpuTimes is /proc/stat's "cpu" line: jiffies of every state summed, and of idle + iowait.
type cpuTimes struct{ total, idle uint64 }

func parseCPULine(line string) (cpuTimes, error) {
	f := strings.Fields(line)
	if len(f) < 5 || f[0] != "cpu" {
		return cpuTimes{}, fmt.Errorf("not /proc/stat's cpu line: %q", line)
	}
	var t cpuTimes
	for i, s := range f[1:] {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return cpuTimes{}, fmt.Errorf("/proc/stat: %q: %w", line, err)
		}
		t.total += v
		if i == 3 || i == 4 { // idle, iowait
			t.idle += v
		}
	}
	return t, nil
}

func readCPU() (cpuTimes, error) {
	f, err := os.Open("/proc/stat")
	if err != nil {
		return cpuTimes{}, err
	}
	defer f.Close()
	line, err := bufio.NewReader(f).ReadString('\n')
	if err != nil {
		return cpuTimes{}, err
	}
	return parseCPULine(line)
}

// cpuSample is the cores' busy share over the 100 ms that ended at since (from the clock's start).
type cpuSample struct {
	since time.Duration
	busy  float64
}

// cpuSampler samples every 100 ms from start until stopped. Only its goroutine writes samples,
// and Stop reads them after that goroutine has ended.
type cpuSampler struct {
	samples []cpuSample
	stop    context.CancelFunc
	done    chan struct{}
}

func sampleCPU(ctx context.Context, start time.Time) *cpuSampler {
	ctx, cancel := context.WithCancel(ctx)
	c := &cpuSampler{stop: cancel, done: make(chan struct{})}
	go func() {
		defer close(c.done)
		prev, err := readCPU()
		if err != nil {
			return
		}
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			cur, err := readCPU()
			if err != nil || cur.total == prev.total {
				continue
			}
			busy := 1 - float64(cur.idle-prev.idle)/float64(cur.total-prev.total)
			c.samples = append(c.samples, cpuSample{since: time.Since(start), busy: busy})
			prev = cur
		}
	}()
	return c
}

// Stop ends the sampling and returns the samples.
func (c *cpuSampler) Stop() []cpuSample {
	c.stop()
	<-c.done
	return c.samples
}

// busyBetween is the mean busy share of the samples that end in (from, to]; -1 without any.
func busyBetween(samples []cpuSample, from, to time.Duration) float64 {
	sum, n := 0.0, 0
	for _, s := range samples {
		if s.since > from && s.since <= to {
			sum += s.busy
			n++
		}
	}
	if n == 0 {
		return -1
	}
	return sum / float64(n)
}

// percent formats busy shares as their median in percent, leaving out runs without samples (-1);
// "-" without any.
func percent(fs []float64) string {
	fs = slices.DeleteFunc(slices.Clone(fs), func(f float64) bool { return f < 0 })
	if len(fs) == 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f %%", 100*median(fs))
}
