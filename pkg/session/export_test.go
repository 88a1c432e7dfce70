package session

import (
	"context"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"
)

// One-operation rounds, for the tests.

// Take runs a round that only takes.
func (s *Store) Take(ctx context.Context, clientID string, epoch uint64, max int) ([]QueuedMessage, error) {
	if max <= 0 {
		return nil, nil
	}
	r := Round{ClientID: clientID, Epoch: epoch, Take: max}
	if err := s.runRound(ctx, &r); err != nil {
		return r.Taken, fmt.Errorf("taking from queue of %s: %w", clientID, err)
	}
	return r.Taken, nil
}

// AckMany runs a round that only records acknowledgements.
func (s *Store) AckMany(ctx context.Context, clientID string, epoch uint64, packetIDs []uint16) error {
	if err := s.runRound(ctx, &Round{ClientID: clientID, Epoch: epoch, Acks: packetIDs}); err != nil {
		return fmt.Errorf("acknowledging %d messages of %s: %w", len(packetIDs), clientID, err)
	}
	return nil
}

// Ack acknowledges one message.
func (s *Store) Ack(ctx context.Context, clientID string, epoch uint64, packetID uint16) error {
	return s.AckMany(ctx, clientID, epoch, []uint16{packetID})
}

// PubrecReceived runs a round that only records a PUBREC.
func (s *Store) PubrecReceived(ctx context.Context, clientID string, epoch uint64, packetID uint16) error {
	return s.runRound(ctx, &Round{ClientID: clientID, Epoch: epoch, Pubrecs: []uint16{packetID}})
}

// runRound runs one round on its own.
func (s *Store) runRound(ctx context.Context, r *Round) error {
	keys, args := s.roundArgs(r)
	v, err := roundScript.Run(ctx, s.rdb, keys, args...).Slice()
	if err != nil && !errors.Is(err, redis.Nil) {
		return mapErr(err)
	}
	r.Taken, r.Seq, r.Full, err = parseTaken(r.ClientID, v)
	return err
}
