// Command demo runs the whole product on this machine (see package demo). `make demo` runs it.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/wsgi-ami/packer-plugin-wsgi/e2e/demo"
	"github.com/wsgi-ami/packer-plugin-wsgi/e2e/harness"
)

func main() {
	keep := flag.Bool("keep", false, "keep the instance running until Ctrl-C")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	defer harness.CloseAll()
	if _, err := demo.Run(ctx, demo.Options{Log: os.Stdout, Keep: *keep}); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}
