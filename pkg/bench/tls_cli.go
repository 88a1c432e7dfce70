package bench

import (
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/fleetgate/fleetgate/pkg/bench/internal/tlsfiles"
)

// mainTLSFiles writes a CA and a server certificate for the TLS benchmarks
// (tlsfiles.Write) and prints their paths.
func mainTLSFiles(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("tls-files", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", "", "Directory to write ca.pem, server.pem and server-key.pem into (created if missing).")
	var c common
	c.register(fs)
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w: %w", ErrUsage, err)
	}
	if *dir == "" {
		return fmt.Errorf("%w: tls-files: -dir is required", ErrUsage)
	}
	if err := os.MkdirAll(*dir, 0o755); err != nil {
		return err
	}
	files, err := tlsfiles.Write(*dir)
	if err != nil {
		return fmt.Errorf("tls-files: %w", err)
	}
	return c.output(stdout, files, func(w io.Writer) error {
		_, err := fmt.Fprintf(w, "ca %s\ncert %s\nkey %s\n", files.CA, files.Cert, files.Key)
		return err
	})
}
