package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/vmdhq/vmd/api/v1alpha1"
)

// escapeByte is Ctrl-], which detaches from the console as with telnet
// and `virsh console`.
const escapeByte = 0x1d

// newConsoleCmd builds `vmctl console NAME [--force]`, the counterpart of
// `virtctl console`.
func newConsoleCmd(root *rootOptions) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "console NAME",
		Short: "Attach to the serial console of a VMInstance",
		Long: `Attach the terminal to the guest's serial console. Press Ctrl-] to
detach. One session may be open per VMInstance; --force takes over a
session left open elsewhere. When stdin is not a terminal, its end
detaches too. The guest must be running; "vmctl logs" shows what it
printed before.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := root.client()
			if err != nil {
				return err
			}
			ns, _ := root.ns()
			con, err := c.Console(cmd.Context(), ns, args[0], force)
			if err != nil {
				return notFound(err, v1alpha1.KindVMInstance, args[0])
			}
			defer con.Close()
			errOut := root.streams.ErrOut
			fmt.Fprintf(errOut, "Connected to vminstance/%s (escape character is ^])\r\n", args[0])
			if f, ok := root.streams.In.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
				old, err := term.MakeRaw(int(f.Fd()))
				if err != nil {
					return fmt.Errorf("switching the terminal to raw mode: %w", err)
				}
				// Restored on every way out, including errors.
				defer func() { _ = term.Restore(int(f.Fd()), old) }()
			}
			detached, err := attach(con, root.streams.In, root.streams.Out)
			if detached {
				fmt.Fprintf(errOut, "\r\nDetached from vminstance/%s\r\n", args[0])
			} else if err == nil {
				fmt.Fprintf(errOut, "\r\nConsole of vminstance/%s closed (the guest stopped or another session took over)\r\n", args[0])
			}
			return err
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "disconnect another open session of this console")
	return cmd
}

// attach copies in to con and con to out until the user types the escape
// byte or in ends (detached = true), or the console closes. The bytes
// before the escape in the same read are still sent.
func attach(con io.ReadWriteCloser, in io.Reader, out io.Writer) (detached bool, err error) {
	type result struct {
		detached bool
		err      error
	}
	done := make(chan result, 2)
	go func() {
		_, err := io.Copy(out, con)
		if errors.Is(err, io.EOF) {
			err = nil
		}
		done <- result{err: err}
	}()
	go func() {
		buf := make([]byte, 4096)
		for {
			n, rerr := in.Read(buf)
			chunk, esc := buf[:n], false
			if i := bytes.IndexByte(chunk, escapeByte); i >= 0 {
				chunk, esc = chunk[:i], true
			}
			if len(chunk) > 0 {
				if _, err := con.Write(chunk); err != nil {
					done <- result{err: err}
					return
				}
			}
			if esc || rerr != nil {
				// The stdin goroutine of a terminal stays blocked in
				// Read after this; the process exits right after.
				done <- result{detached: true}
				return
			}
		}
	}()
	r := <-done
	// Closing the console ends the other copy.
	_ = con.Close()
	if r.detached {
		return true, nil
	}
	return false, ignoreClosed(r.err)
}

// ignoreClosed drops the error of reading a console we closed ourselves.
func ignoreClosed(err error) error {
	if err == nil || errors.Is(err, os.ErrClosed) {
		return nil
	}
	return err
}
