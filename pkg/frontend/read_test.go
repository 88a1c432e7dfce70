package frontend

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	crand "crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"math/rand/v2"
	"net"
	"os"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"
	"github.com/stretchr/testify/require"

	"github.com/fleetgate/fleetgate/internal/testkit"
)

// TestReadsReturnTheStreamAsSentWhateverTheSizes: conn.Read, as mochi's
// 16-byte bufio.Reader calls it (single bytes, a packet body at a time),
// returns exactly the bytes the client wrote, however the writes and the
// reads are cut: many packets in one segment, one split over many, reads
// longer than the lent buffer. Over plain TCP (the socket read directly)
// and behind a PROXY protocol header that arrives in one write with more
// packets than the first reads take (the bytes the PROXY protocol reader
// buffered with its header must all come out before the socket is read
// directly, or they would be skipped). Once the stream is read,
// the connection holds no lent buffer, and the next read waits for the
// socket.
func TestReadsReturnTheStreamAsSentWhateverTheSizes(t *testing.T) {
	const lend = 64
	for _, tc := range []struct {
		name  string
		proxy bool
	}{{"TCP", false}, {"PROXY protocol over TCP", true}} {
		t.Run(tc.name, func(t *testing.T) {
			sc, cc := testkit.TCPPair(t)
			var nc net.Conn = sc
			if tc.proxy {
				nc = proxyproto.NewConn(sc)
			}
			c := newConn(nc, 0, nil, newReadPool(lend))
			require.Equal(t, !tc.proxy, c.direct, "plain TCP reads its socket directly from the start")

			rng := rand.New(rand.NewPCG(1, 2))
			stream := make([]byte, 256<<10)
			for i := range stream {
				stream[i] = byte(rng.IntN(256))
			}
			go func() {
				first := stream[:5*lend] // with the header, in one write
				if tc.proxy {
					first = append([]byte("PROXY TCP4 10.1.2.3 10.9.9.9 40000 1883\r\n"), first...)
				}
				if _, err := cc.Write(first); err != nil {
					return
				}
				for rest := stream[5*lend:]; len(rest) > 0; {
					n := min(len(rest), 1+rng.IntN(3*lend))
					if _, err := cc.Write(rest[:n]); err != nil {
						return
					}
					rest = rest[n:]
					if rng.IntN(8) == 0 {
						time.Sleep(time.Millisecond) // let the reader catch up and wait
					}
				}
			}()

			br := bufio.NewReaderSize(c, minReadBuffer)
			got := make([]byte, 0, len(stream))
			readRng := rand.New(rand.NewPCG(3, 4))
			for len(got) < len(stream) {
				// The first bytes one at a time, as mochi reads a fixed
				// header: 16-byte reads of the connection, far fewer
				// than the PROXY protocol reader buffered with the header.
				if len(got) < 40 || readRng.IntN(2) == 0 {
					b, err := br.ReadByte()
					require.NoError(t, err)
					got = append(got, b)
					continue
				}
				body := make([]byte, min(len(stream)-len(got), readRng.IntN(3*lend)))
				_, err := io.ReadFull(br, body)
				require.NoError(t, err)
				got = append(got, body...)
			}
			require.True(t, bytes.Equal(stream, got), "the bytes read differ from those written")
			require.Nil(t, c.rbuf, "a connection whose bytes were all read holds no lent buffer")
			require.True(t, c.direct, "past the header, the socket is read directly")
			if tc.proxy {
				require.Equal(t, "10.1.2.3:40000", c.RemoteAddr().String())
			}

			// Nothing more comes: the read waits for the socket, and its
			// deadline ends the wait as a timeout, holding no buffer.
			require.NoError(t, c.Conn.SetReadDeadline(time.Now().Add(50*time.Millisecond)))
			_, err := br.ReadByte()
			var ne net.Error
			require.True(t, errors.As(err, &ne) && ne.Timeout(), "a deadline ends the wait with a timeout: %v", err)
			require.ErrorIs(t, err, os.ErrDeadlineExceeded)
			require.Nil(t, c.rbuf)

			// The client's close is the end of the stream.
			require.NoError(t, c.Conn.SetReadDeadline(time.Time{}))
			_, err = cc.Write([]byte{0xC0, 0x00})
			require.NoError(t, err)
			require.NoError(t, cc.Close())
			b, err := br.ReadByte()
			require.NoError(t, err)
			require.Equal(t, byte(0xC0), b)
			b, err = br.ReadByte()
			require.NoError(t, err)
			require.Equal(t, byte(0x00), b)
			_, err = br.ReadByte()
			require.ErrorIs(t, err, io.EOF)
			require.Nil(t, c.rbuf)
		})
	}
}

// TestATLSConnectionIsReadAsItIs: crypto/tls buffers its records, so a TLS
// connection borrows no buffer: mochi's reads go to it as they are, and
// the stream comes out whole however the writes and reads are cut.
func TestATLSConnectionIsReadAsItIs(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), crand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "fleetgate-test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), DNSNames: []string{"fleetgate-test"}}
	der, err := x509.CreateCertificate(crand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	cert := tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}

	sc, cc := testkit.TCPPair(t)
	c := newConn(tls.Server(sc, &tls.Config{Certificates: []tls.Certificate{cert}}), 0, nil, newReadPool(64))
	client := tls.Client(cc, &tls.Config{InsecureSkipVerify: true}) // a test's own certificate
	rng := rand.New(rand.NewPCG(5, 6))
	stream := make([]byte, 64<<10)
	for i := range stream {
		stream[i] = byte(rng.IntN(256))
	}
	go func() {
		for rest := stream; len(rest) > 0; {
			n := min(len(rest), 1+rng.IntN(300))
			if _, err := client.Write(rest[:n]); err != nil {
				return
			}
			rest = rest[n:]
		}
	}()
	br := bufio.NewReaderSize(c, minReadBuffer)
	got := make([]byte, 0, len(stream))
	readRng := rand.New(rand.NewPCG(7, 8))
	for len(got) < len(stream) {
		body := make([]byte, min(len(stream)-len(got), 1+readRng.IntN(200)))
		_, err := io.ReadFull(br, body)
		require.NoError(t, err)
		require.Nil(t, c.rbuf, "a TLS connection borrows no buffer")
		got = append(got, body...)
	}
	require.True(t, bytes.Equal(stream, got), "the bytes read differ from those written")
	require.False(t, c.direct)
}
