package builder

import (
	"context"
	"fmt"
	"time"

	"github.com/wsgi-ami/packer-plugin-wsgi/internal/awscfg"
)

// waitConfig is aws_polling for the SDK waiters.
type waitConfig struct {
	Delay, Timeout time.Duration
}

func (w waitConfig) minDelay() time.Duration {
	if w.Delay <= 0 {
		return awscfg.DefaultPollDelay
	}
	return w.Delay
}

func (w waitConfig) timeout() time.Duration {
	if w.Timeout <= 0 {
		return awscfg.DefaultPollTimeout
	}
	return w.Timeout
}

func (w waitConfig) maxDelay() time.Duration {
	if d := w.minDelay(); d > 30*time.Second {
		return d
	}
	return 30 * time.Second
}

// progressEvery is how often a long wait prints that it is still waiting.
var progressEvery = 15 * time.Second

// waitFor runs an SDK waiter (fn) and prints a line when it starts, every
// progressEvery while it runs, and when it ends, each with the elapsed time.
// The polling itself is the SDK waiter's; this only reports.
func waitFor(ctx context.Context, u uiSayer, what string, fn func(context.Context) error) error {
	start := time.Now()
	say(u, fmt.Sprintf("Waiting for %s...", what))
	every := progressEvery
	done, exited := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(exited)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				say(u, fmt.Sprintf("Still waiting for %s (%s elapsed)", what, time.Since(start).Round(time.Second)))
			}
		}
	}()
	err := fn(ctx)
	close(done)
	<-exited
	if err != nil {
		return fmt.Errorf("waiting for %s after %s: %w", what, time.Since(start).Round(time.Second), err)
	}
	say(u, fmt.Sprintf("%s after %s", capitalize(what), time.Since(start).Round(100*time.Millisecond)))
	return nil
}
