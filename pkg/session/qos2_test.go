package session

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestInboundQoS2IsExactlyOnceAcrossNodes(t *testing.T) {
	s, _ := newTestStore(t, nil)
	ctx := testCtx(t)
	cid := clientID(t, "c")
	e1 := connect(t, s, cid, "n1")

	already, err := s.MarkReceived(ctx, cid, e1, 42)
	require.NoError(t, err)
	assert.False(t, already, "the first PUBLISH is new")
	already, err = s.MarkReceived(ctx, cid, e1, 42)
	require.NoError(t, err)
	assert.True(t, already, "a resent PUBLISH before PUBREL is a duplicate")

	// The client reconnects to another node and resends with DUP.
	e2 := connect(t, s, cid, "n2")
	already, err = s.MarkReceived(ctx, cid, e2, 42)
	require.NoError(t, err)
	assert.True(t, already, "the other node sees the id as received")

	existed, err := s.Released(ctx, cid, e2, 42)
	require.NoError(t, err)
	assert.True(t, existed, "the id awaited PUBREL")
	existed, err = s.Released(ctx, cid, e2, 42)
	require.NoError(t, err, "a second PUBREL is harmless")
	assert.False(t, existed, "a second PUBREL finds no id")
	already, err = s.MarkReceived(ctx, cid, e2, 42)
	require.NoError(t, err)
	assert.False(t, already, "after PUBREL the id starts a new message")

	res, err := s.Connect(ctx, ConnectRequest{ClientID: cid, Node: "n1", CleanStart: true})
	require.NoError(t, err)
	already, err = s.MarkReceived(ctx, cid, res.Epoch, 42)
	require.NoError(t, err)
	assert.False(t, already, "clean start forgets received ids")
}
