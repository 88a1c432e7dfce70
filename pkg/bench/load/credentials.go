package load

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strings"
)

// Credentials gives client i of a workload (0 ≤ i < its client count) the
// username and password of its CONNECT. An empty username connects without
// either: MQTT 3.1.1 allows no password without a username
// [MQTT-3.1.2-22]. A JWT travels as the password.
type Credentials func(i int) (username, password string)

// ErrCredentials is returned for a credentials file that cannot serve the
// workload.
var ErrCredentials = errors.New("credentials")

// StaticCredentials gives every client the same username and password
// (none when username is empty): the -username and -password flags.
func StaticCredentials(username, password string) Credentials {
	return func(int) (string, string) { return username, password }
}

// ReadCredentialsFile reads a file of username:password lines, one per
// client in order: line i (counting neither blank lines nor lines starting
// with #) is client i's. The password is everything after the first colon
// and may be empty; the username may not. It is the format of the files
// `mosquitto_passwd -U` hashes in place, so one plain file serves the load
// generator and a mosquitto password file. It returns the credentials and
// the number of lines; client i ≥ that number gets none.
func ReadCredentialsFile(path string) (Credentials, int, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, fmt.Errorf("%w file: %w", ErrCredentials, err)
	}
	defer f.Close()
	type pair struct{ user, pass string }
	var lines []pair
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20) // a JWT may be a few KiB
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimRight(sc.Text(), "\r")
		if strings.TrimSpace(line) == "" || strings.HasPrefix(line, "#") {
			continue
		}
		user, pass, ok := strings.Cut(line, ":")
		if !ok || user == "" {
			// Never quote the line: it holds a password.
			return nil, 0, fmt.Errorf("%w file %s line %d: want username:password", ErrCredentials, path, n)
		}
		lines = append(lines, pair{user, pass})
	}
	if err := sc.Err(); err != nil {
		return nil, 0, fmt.Errorf("%w file %s: %w", ErrCredentials, path, err)
	}
	return func(i int) (string, string) {
		if i < 0 || i >= len(lines) {
			return "", ""
		}
		return lines[i].user, lines[i].pass
	}, len(lines), nil
}

// resolveCredentials picks what a workload's clients connect with: fn when
// set, else the file (which must have a line for each of clients), else
// the static username and password.
func resolveCredentials(fn Credentials, file, username, password string, clients int) (Credentials, error) {
	if fn != nil {
		return fn, nil
	}
	if file == "" {
		return StaticCredentials(username, password), nil
	}
	creds, n, err := ReadCredentialsFile(file)
	if err != nil {
		return nil, err
	}
	if n < clients {
		return nil, fmt.Errorf("%w file %s: %d lines for %d clients", ErrCredentials, file, n, clients)
	}
	return creds, nil
}
