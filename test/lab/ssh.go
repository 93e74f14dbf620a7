package lab

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
)

// generateSSHKey creates the lab's fresh ed25519 key: in memory for SSH, and on disk (OpenSSH
// format, 0600) so a person can log in to a kept lab's guests with ssh -i.
func (l *Lab) generateSSHKey() error {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return fmt.Errorf("generating ssh key: %w", err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		return fmt.Errorf("generating ssh key: %w", err)
	}
	block, err := ssh.MarshalPrivateKey(priv, l.Name)
	if err != nil {
		return fmt.Errorf("encoding ssh key: %w", err)
	}
	l.SSHKeyPath = filepath.Join(l.Dir, "ssh", "id_ed25519")
	if err := os.WriteFile(l.SSHKeyPath, pem.EncodeToMemory(block), 0o600); err != nil {
		return fmt.Errorf("writing ssh key: %w", err)
	}
	l.SSHSigner = signer
	l.SSHAuthorizedKey = strings.TrimSpace(string(ssh.MarshalAuthorizedKey(signer.PublicKey()))) + " " + l.Name
	return os.WriteFile(l.SSHKeyPath+".pub", []byte(l.SSHAuthorizedKey+"\n"), 0o644)
}

// SSH logs in to addr as user with the lab's key, connecting from side. Host keys are not
// checked: every guest generates new ones on first boot, and the network is the lab's own.
func (l *Lab) SSH(ctx context.Context, side Side, addr netip.AddrPort, user string) (*ssh.Client, error) {
	conn, err := l.Dial(ctx, side, "tcp", addr.String())
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(30 * time.Second)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	_ = conn.SetDeadline(deadline) // bounds the handshake only
	cfg := &ssh.ClientConfig{
		User:            user,
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(l.SSHSigner)},
		HostKeyCallback: ssh.InsecureIgnoreHostKey(),
	}
	c, chans, reqs, err := ssh.NewClientConn(conn, addr.String(), cfg)
	if err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("ssh %s@%s: %w", user, addr, err)
	}
	_ = conn.SetDeadline(time.Time{})
	return ssh.NewClient(c, chans, reqs), nil
}

// SSHRun runs cmd in a new session and returns its standard output; a failure carries stderr.
// Cancelling ctx closes the session.
func SSHRun(ctx context.Context, c *ssh.Client, cmd string) (string, error) {
	s, err := c.NewSession()
	if err != nil {
		return "", fmt.Errorf("opening ssh session: %w", err)
	}
	defer s.Close()
	var stdout, stderr bytes.Buffer
	s.Stdout = &stdout
	s.Stderr = &stderr
	done := make(chan error, 1)
	go func() { done <- s.Run(cmd) }()
	select {
	case err = <-done:
	case <-ctx.Done():
		_ = s.Close()
		err = ctx.Err()
	}
	if err != nil {
		return stdout.String(), fmt.Errorf("running %q over ssh: %w: %s", cmd, err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}
