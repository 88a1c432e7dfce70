package archive

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.mongodb.org/mongo-driver/v2/bson"
)

func TestDocumentIDIsTheSameForTheSameRecordOnly(t *testing.T) {
	at := time.UnixMilli(1764663398768)
	r := &kgo.Record{Topic: "mqtt.inbound", Partition: 3, Offset: 1042, Timestamp: at}
	assert.Equal(t, "mqtt.inbound:3:1042:1764663398768", DocumentID(r))
	again := *r
	assert.Equal(t, DocumentID(r), DocumentID(&again), "a redelivered record has the same _id")
	// A topic deleted and created again starts at offset 0 again: its
	// records must not be taken for those archived before.
	recreated := &kgo.Record{Topic: "mqtt.inbound", Partition: 3, Offset: 1042, Timestamp: at.Add(time.Hour)}
	assert.NotEqual(t, DocumentID(r), DocumentID(recreated))
}

func TestDataIsAStringOnlyForUTF8InAutoMode(t *testing.T) {
	assert.Equal(t, "héllo", Data([]byte("héllo"), PayloadAuto))
	assert.Equal(t, "", Data(nil, PayloadAuto))
	assert.Equal(t, bson.Binary{Data: []byte{0xc3, 0x28}}, Data([]byte{0xc3, 0x28}, PayloadAuto), "invalid UTF-8")
	assert.Equal(t, bson.Binary{Data: []byte("héllo")}, Data([]byte("héllo"), PayloadBinary))
	assert.Equal(t, bson.Binary{Data: []byte{}}, Data(nil, PayloadBinary))
}
