package session

import (
	"context"
	"fmt"

	"github.com/redis/go-redis/v9"
)

var markReceivedScript = redis.NewScript(luaPrelude + `
local err = fence()
if err then return err end
local added = redis.call('SADD', KEYS[2], ARGV[2])
follow(KEYS[2])
return added
`)

// MarkReceived records that the inbound QoS 2 PUBLISH packetID was received
// and reports whether it already was: then it must not be produced again,
// only answered with PUBREC [MQTT-4.3.3-10]. The record survives a reconnect
// to another node, which makes QoS 2 exactly once into Kafka across nodes.
// Call it after the message is durable and before sending PUBREC.
func (s *Store) MarkReceived(ctx context.Context, clientID string, epoch uint64, packetID uint16) (alreadyReceived bool, err error) {
	n, err := markReceivedScript.Run(ctx, s.rdb, []string{sessionKey(clientID), relKey(clientID)}, epochArg(epoch), packetID).Int64()
	if err != nil {
		return false, fmt.Errorf("marking QoS 2 packet %d of %s received: %w", packetID, clientID, mapErr(err))
	}
	return n == 0, nil
}

var releasedScript = redis.NewScript(luaPrelude + `
local err = fence()
if err then return err end
return redis.call('SREM', KEYS[2], ARGV[2])
`)

// Released forgets the inbound QoS 2 packet id on PUBREL, before PUBCOMP:
// from then on the id may be reused for a new message [MQTT-4.3.3-11]. It
// reports whether the id was awaiting PUBREL; an unknown id is not an error
// (PUBCOMP is sent anyway [MQTT-4.3.3-12], with reason code 0x92 Packet
// Identifier not found on MQTT 5).
func (s *Store) Released(ctx context.Context, clientID string, epoch uint64, packetID uint16) (existed bool, err error) {
	n, err := releasedScript.Run(ctx, s.rdb, []string{sessionKey(clientID), relKey(clientID)}, epochArg(epoch), packetID).Int64()
	if err != nil {
		return false, fmt.Errorf("releasing QoS 2 packet %d of %s: %w", packetID, clientID, mapErr(err))
	}
	return n == 1, nil
}
