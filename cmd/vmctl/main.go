// Command vmctl is the kubectl-like command-line client of vmd. It applies
// VMInstance and VMDisk manifests, lists and describes them, waits for
// conditions and deletes them, talking to the daemon only through
// internal/client over vmd's unix socket.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/vmdhq/vmd/internal/client"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], IOStreams{In: os.Stdin, Out: os.Stdout, ErrOut: os.Stderr}, client.New)
	stop()
	os.Exit(code)
}

// run executes one vmctl invocation and returns the process exit code.
// Every error is printed here, once, except those a command already
// reported itself (errReported).
func run(ctx context.Context, args []string, streams IOStreams, newClient clientFactory) int {
	return execute(ctx, newRootCmd(streams, newClient, time.Now), args, streams.ErrOut)
}

// execute runs cmd with args and maps the outcome to an exit code,
// printing the error unless the command already did.
func execute(ctx context.Context, cmd *cobra.Command, args []string, errOut io.Writer) int {
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	if !errors.Is(err, errReported) {
		printError(errOut, err)
	}
	return 1
}

// errReported tells run that the failure was already printed (apply and
// delete print one error per object and keep going).
var errReported = errors.New("error already reported")

// printError prints err the way kubectl does: server-side failures as
// "Error from server (Reason): message" with one line per field cause,
// everything else as "error: message".
func printError(w io.Writer, err error) {
	if reason := client.ReasonOf(err); reason != "" {
		fmt.Fprintf(w, "Error from server (%s): %v\n", reason, err)
		return
	}
	fmt.Fprintf(w, "error: %v\n", err)
}
